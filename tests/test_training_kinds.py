"""The table of training kinds is what every part reads: each entry's TRL classes exist,
its defaults reach the config, its command and options exist in the CLI, the readiness
check speaks of its rows, and the Models page offers it. A kind added to the table (ORPO
was added this way: one entry) gets all of that without another file changing."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from alignment.errors import NotEnoughTrainingData
from alignment.readiness import check_rows
from alignment.training import make_config
from alignment.training_kinds import KINDS, REWARD, TrainingKind, policy_kinds, training_kind
from assistant.cli import main


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_entry_names_real_trl_classes_and_its_defaults_reach_the_config(kind, tmp_path):
    spec = KINDS[kind]
    for algo in spec.algorithms:
        config = make_config(kind, str(tmp_path), algo=algo)
        assert isinstance(config, spec.trl_class("Config", algo))
        assert spec.trl_class("Trainer", algo).__name__.endswith("Trainer")
        for field, value in spec.defaults.items():
            assert getattr(config, field) == value, field
        assert (config.train_sampling_strategy == "group_by_length") is spec.grouped


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_has_its_command_with_the_options_its_entry_calls_for(kind):
    spec = KINDS[kind]
    out = CliRunner().invoke(main, ["train", kind, "--help"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert " ".join(spec.help.split())[:40] in text
    assert ("--algo" in text) is (len(spec.algorithms) > 1)
    assert ("--reward" in text) is spec.online
    assert ("--preset" in text) is bool(spec.presets)
    assert "--steps" in text and "--set FIELD=VALUE" in text


def test_readiness_counts_each_kind_in_its_own_rows():
    for spec in KINDS.values():
        with pytest.raises(NotEnoughTrainingData) as err:
            check_rows(spec.name, [])
        assert spec.rows_named in str(err.value) and str(spec.min_rows) in str(err.value)


def test_reward_models_are_the_one_kind_that_does_not_chat():
    assert [k.name for k in KINDS.values() if k.reward] == [REWARD]
    assert REWARD not in policy_kinds() and "orpo" in policy_kinds()


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown training kind 'ppo' .known: dpo, kto, sft"):
        training_kind("ppo")
    with pytest.raises(ValueError, match="has no algorithm 'ppo'"):
        KINDS["rl"].trl_stem("ppo")


def test_one_new_entry_is_a_kind_config_readiness_and_command_know(monkeypatch, tmp_path):
    """What adding a kind takes: one TrainingKind. Here a variant of SFT with its own
    learning rate and minimum, added to the table only."""
    import click

    import alignment.training_kinds as kinds
    from alignment import cli_train

    new = dataclasses.replace(KINDS["sft"], name="sft_slow", help="SFT, slowly.", min_rows=40,
                              defaults={"learning_rate": 1e-6})
    monkeypatch.setattr(kinds, "KINDS", {**KINDS, "sft_slow": new})
    assert make_config("sft_slow", str(tmp_path)).learning_rate == 1e-6
    with pytest.raises(NotEnoughTrainingData, match="needs at least 40 good answers"):
        check_rows("sft_slow", [{}] * 39)
    group = click.Group("train")
    monkeypatch.setattr(cli_train, "train", group)
    cli_train._kind_command(new)
    assert "SFT, slowly." in CliRunner().invoke(group, ["sft_slow", "--help"]).output
    assert isinstance(new, TrainingKind)
