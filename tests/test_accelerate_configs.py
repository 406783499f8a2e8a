"""The shipped `accelerate launch` configs (alignment/accelerate/*.yaml) load with accelerate's
own loader and turn into the launch environment that accelerate would hand the processes.
No GPU (and no DeepSpeed) is needed: nothing is launched."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

CONFIGS = Path(__file__).resolve().parents[1] / "alignment" / "accelerate"
COMMAND = ["-m", "assistant.cli", "train", "dpo", "--epochs", "1"]

#: file -> (distributed_type, ZeRO stage or None)
EXPECTED = {
    "ddp.yaml": ("MULTI_GPU", None),
    "zero2.yaml": ("DEEPSPEED", 2),
    "zero3.yaml": ("DEEPSPEED", 3),
    "fsdp.yaml": ("FSDP", None),
}


def test_every_shipped_config_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_loader(name):
    distributed_type, zero_stage = EXPECTED[name]
    config = load_config_from_file(str(CONFIGS / name))  # unknown keys would raise here
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == distributed_type
    assert config.mixed_precision == "bf16"
    assert config.num_processes == 8 and config.num_machines == 1
    assert config.use_cpu is False
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
        # Left to the trainer (--grad-accum), so the two cannot disagree.
        assert "gradient_accumulation_steps" not in config.deepspeed_config
    else:
        assert config.deepspeed_config == {}
    assert ClusterConfig.from_yaml_file(str(CONFIGS / name)).to_dict() == config.to_dict()


def _launch_args(name: str, *extra: str):
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), *extra, *COMMAND])
    return _validate_launch_command(args)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_reads_the_config(name):
    args, defaults, _ = _launch_args(name)
    distributed_type, _ = EXPECTED[name]
    assert args.num_processes == 8
    assert args.mixed_precision == "bf16"
    assert args.multi_gpu == (distributed_type == "MULTI_GPU")
    assert args.use_deepspeed == (distributed_type == "DEEPSPEED")
    assert args.use_fsdp == (distributed_type == "FSDP")
    assert args.training_script == "assistant.cli" and args.module
    assert args.training_script_args == COMMAND[2:]


def test_num_processes_on_the_command_line_wins():
    args, _, _ = _launch_args("ddp.yaml", "--num_processes", "2")
    assert args.num_processes == 2


def test_fsdp_environment_is_full_shard_transformer_wrap():
    args, _, _ = _launch_args("fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_VERSION"] == "2"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    # Every process loads real weights: the product fingerprints the base model on load.
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"


@pytest.mark.parametrize(("name", "stage"), [("zero2.yaml", 2), ("zero3.yaml", 3)])
def test_deepspeed_environment_has_the_zero_stage(name, stage):
    args, defaults, _ = _launch_args(name)
    # What `accelerate launch` sets before building the DeepSpeed launch environment.
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    # No zero.Init at load: the product fingerprints the base model's embeddings on load.
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "false"
