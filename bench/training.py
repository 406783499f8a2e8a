"""Training benchmark on the embedded model, through the product's own path: hh-rlhf pairs
imported with ``alignment.importers.import_hh_rlhf`` into a fresh SQLite data dir, then
``alignment.training.train`` with ``make_config`` (the same calls as ``assistant train``).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/training.py --reward      [--max-length 384 ...]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/training.py --throughput  [--variants all]

``--reward``: the reward model (SmolLM2-135M + scalar head + LoRA) trained one epoch on
1,000 pairs (``limit=1000``; ``test_fraction=0.15`` holds out 192 conversations) and
evaluated on all of them (``eval_rows=-1``). Reported: held-out accuracy, beside two
baselines scored on the very same held-out pairs in the same process: "the shorter answer
wins" and "the longer answer wins" (hh-rlhf *harmless* prefers short refusals, so length
alone beats a coin). TRL's ``RewardTrainer`` *drops* pairs longer than ``max_length``
(it does not truncate them): the pairs actually trained on and evaluated are printed.
``--steps N`` runs N steps only and projects the epoch's wall time (to pick settings).

``--throughput``: tokens/s of DPO and reward training and the fraction of the machine's
matmul peak, measured in the same process. The peak is a large ``torch.matmul``
(2048x2048 fp32 on CPU, 8192x8192 bf16 on CUDA; FLOP = 2 n^3) after warm-up. Each trainer
then runs ``--warmup + --steps`` optimizer steps on the product path; the first
``--warmup`` steps are not timed. A forward pre-hook on the transformer body counts, for
every forward pass, its non-pad tokens (``attention_mask.sum()``) and its padded size, and
whether autograd was on (policy) or off (DPO's reference pass, adapter disabled). FLOPs::

    P      = non-embedding weights of the model (q,k,v,o,gate,up,down of every layer)
             + the scalar head (hidden x 1) for the reward model
    P_lora = LoRA A/B weights
    policy forward+backward, per token:  2(P+P_lora) forward
                                       + 2(P+P_lora) backward to the activations
                                       + 2 P_lora    backward to the LoRA weights
                                       = 4P + 6 P_lora   (no weight gradient of the frozen P)
    reference forward (DPO), per token:  2P
    H      = the LM head (tied to the embeddings: vocab x hidden), DPO only. TRL's fused head
             scores only the labelled (answer) positions (the product makes it do so on a CPU
             too: alignment/training/lm_head.py); a spy on its kernel counts them:
             4H per scored position with autograd on, 2H in the reference pass
    useful FLOPs = sum over forwards of non-pad tokens x the above + the head's
    (LoRA on the top K layers only: the backward stops at the lowest adapted layer, so
    the backward term counts only the weights from there up.)

Attention's score/value matmuls (4 x seq x hidden per token per layer, ~5-8% at these
lengths) are left out, so the fraction is a slight underestimate. ``executed`` counts
padded tokens instead: the gap between the two is padding. ``--variants`` re-runs the
measurement with one change at a time (batch size, max_length, threads, gradient
checkpointing, LoRA placement, ``random`` batches instead of length-grouped ones) and
prints each as a
ratio to the baseline run, which runs again at the end to show drift; ``%model pk`` is
trained tokens/s against the model's own peak (``meter.plain_step_tokens_per_s``: a plain
forward/backward of the trained model on a full unpadded batch); ``--profile``
prints torch.profiler's top operators for one more training step of each baseline.

Runs on CUDA with bf16 when present (``make_config`` sets it), fp32 on CPU; ``--device``
forces one. This machine is shared: the load average is printed with each result.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignment.importers import import_hh_rlhf
from alignment.training import make_config, train
from alignment.training.meter import plain_step_tokens_per_s
from assistant.bootstrap import open_database
from assistant.config import Settings
from assistant.engines.models import load_model

ROOT = Path(__file__).resolve().parents[1]
# Where tests/shared_data.py looks: shared/data beside the checkout, or ASSISTANT_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("ASSISTANT_SHARED_DATA", ROOT.parent / "shared" / "data"))
HH_FILE = SHARED_DATA / "hh_rlhf_harmless_test_first1200.jsonl"
DEV_CACHE = Path("/tmp/devdata/models")


# -- machine -----------------------------------------------------------------------------------
def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(choice)


def matmul_peak(device: torch.device, seconds: float = 3.0) -> tuple[float, str]:
    """GFLOP/s of one large matmul in the dtype training computes in on ``device`` (bf16 on a
    CPU with AMX or AVX512_BF16: alignment.training.config.device_defaults)."""
    from alignment.training.config import device_defaults

    cpu_bf16 = device.type == "cpu" and device_defaults()["bf16"]
    n, dtype = (2048, torch.bfloat16 if cpu_bf16 else torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        torch.matmul(a, b)
    sync()
    runs: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(runs) < 5:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        runs.append(time.perf_counter() - t0)
    # The best run is the machine's peak; others are other processes' time slices.
    return 2 * n**3 / min(runs) / 1e9, f"{n}x{n} {str(dtype)[6:]} matmul, best of {len(runs)}"


def load_text() -> str:
    return "load avg {:.2f}".format(os.getloadavg()[0])


# -- product path ------------------------------------------------------------------------------
@dataclass
class Workspace:
    settings: Settings
    pairs: int
    layers: int
    tmp: tempfile.TemporaryDirectory = field(repr=False)


def workspace(data: Path, model_cache: Path | None, device: torch.device) -> Workspace:
    """A fresh data dir with the hh-rlhf pairs imported the way `assistant data import` does."""
    tmp = tempfile.TemporaryDirectory(prefix="bench-training-")
    settings = Settings(data_dir=Path(tmp.name), model="embedded", model_cache_dir=model_cache,
                        device=device.type)
    report = import_hh_rlhf(open_database(settings), data)
    layers = load_model(settings).model.config.num_hidden_layers  # also converts the GGUF once
    return Workspace(settings, report.imported, layers, tmp)


def device_overrides(device: torch.device) -> dict:
    # make_config picks bf16 on CUDA / per CPU by itself; only a forced CPU run on a
    # CUDA machine needs saying so.
    if device.type == "cpu" and torch.cuda.is_available():
        return {"use_cpu": True, "bf16": False, "fp16": False}
    return {}


# -- measuring ---------------------------------------------------------------------------------
def _body(model: torch.nn.Module) -> torch.nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Params:
    p: int  # matmul weights of the body (see the module docstring)
    p_backward: int  # the part of p the backward pass goes through
    lora: int
    embedding: int
    head: int = 0  # the LM head's matmul (vocab x hidden), run on the scored positions only

    def per_token(self, grad: bool) -> int:
        if not grad:  # DPO's reference forward: adapter disabled
            return 2 * self.p
        return 2 * (self.p + self.lora) + 2 * (self.p_backward + self.lora) + 2 * self.lora


def count_params(model: torch.nn.Module) -> Params:
    """P, P_lora as defined in the module docstring. With LoRA on the top layers only, the
    backward pass stops at the lowest adapted layer: only the weights from there up count
    in it (P_backward); with LoRA on every layer P_backward = P."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embed = base.get_input_embeddings().weight
    p = lora = 0
    by_layer: dict[int | None, int] = {}
    lora_layers: list[int] = []
    for name, param in model.named_parameters():
        match = _LAYER.search(name)
        layer = int(match.group(1)) if match else None
        if "lora_" in name:
            lora += param.numel()
            if layer is not None:
                lora_layers.append(layer)
        elif param is embed or "original_module" in name:  # lookup; PEFT's frozen head copy
            continue
        else:
            p += param.numel()
            by_layer[layer] = by_layer.get(layer, 0) + param.numel()
    out = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    head = 0
    if out is not None:  # the LM head: counted per scored position (Meter's kernel spy)
        head = out.weight.numel()
        if out.weight is not embed:  # untied: it was counted with the body above
            p -= head
            by_layer[None] -= head
    lowest = min(lora_layers, default=0)
    p_backward = sum(n for layer, n in by_layer.items() if layer is None or layer >= lowest)
    return Params(p, p_backward, lora, embed.numel(), head)


class Meter(TrainerCallback):
    """Per optimizer step: wall time (end to end) and the forwards' token counts."""

    def __init__(self) -> None:
        self.forwards: list[tuple[bool, int, int, int]] = []  # grad, real, padded, head positions
        self.steps: list[tuple[float, list[tuple[bool, int, int, int]]]] = []
        self.params = Params(0, 0, 0, 0)
        self._handle = None
        self._unspy = None

    def _spy_head(self) -> None:
        """Count the positions TRL's fused LM head scores (rows of its kernel's input), as
        forwards with no body tokens: ``(grad, 0, 0, positions)``."""
        from trl.kernels import ChunkedLogProbFunction

        original = ChunkedLogProbFunction.apply

        def apply(hidden, *args):  # noqa: ANN001, ANN202
            self.forwards.append((torch.is_grad_enabled(), 0, 0, int(hidden.shape[0])))
            return original(hidden, *args)

        ChunkedLogProbFunction.apply = apply
        self._unspy = lambda: setattr(ChunkedLogProbFunction, "apply", original)

    def _hook(self, module, args, kwargs):  # noqa: ANN001, ANN202
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None:
            return
        padded = ids.numel()
        real = int(mask.sum()) if mask is not None and mask.dim() == 2 else padded
        self.forwards.append((torch.is_grad_enabled(), real, padded, 0))

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
        self.params = count_params(model)
        self._handle = _body(model).register_forward_pre_hook(self._hook, with_kwargs=True)
        self._spy_head()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.steps.append((time.perf_counter(), self.forwards))
        self.forwards = []

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if self._handle is not None:
            self._handle.remove()
        if self._unspy is not None:
            self._unspy()

    def window(self, warmup: int, count: int | None = None) -> dict:
        """Totals over ``count`` steps after ``warmup`` (times from the end of step ``warmup``)."""
        if len(self.steps) <= warmup:
            raise RuntimeError(f"only {len(self.steps)} steps ran; need more than --warmup {warmup}")
        last = len(self.steps) if count is None else min(len(self.steps), warmup + count)
        ends = [self.started] + [t for t, _ in self.steps]
        t0 = ends[warmup]
        timed = self.steps[warmup:last]
        fw = [f for _, fs in timed for f in fs]
        per_tok = {True: self.params.per_token(True), False: self.params.per_token(False)}
        head = {True: 4 * self.params.head, False: 2 * self.params.head}  # per scored position
        head_flop = sum(n * head[g] for g, _, _, n in fw)
        step_times = [ends[i + 1] - ends[i] for i in range(warmup, last)]
        return {
            "steps": len(timed),
            "seconds": timed[-1][0] - t0,
            "step_s": statistics.median(step_times),
            "tokens": sum(r for g, r, _, _ in fw if g),  # trained tokens (policy forwards)
            "padded": sum(pd for g, _, pd, _ in fw if g),
            "head_positions": sum(n for g, _, _, n in fw if g),
            "useful_flop": sum(r * per_tok[g] for g, r, _, _ in fw) + head_flop,
            "executed_flop": sum(pd * per_tok[g] for g, _, pd, _ in fw) + head_flop,
        }


class ProfileStep(TrainerCallback):
    """torch.profiler over one optimizer step (``step``, 1-based)."""

    def __init__(self, step: int, rows: int = 18) -> None:
        self.step, self.rows, self.prof = step, rows, None

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if state.global_step + 1 == self.step:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if self.prof is not None and state.global_step == self.step:
            self.prof.__exit__(None, None, None)
            print(f"torch.profiler, step {self.step} (sorted by self CPU time):")
            print(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.rows))


# -- runs --------------------------------------------------------------------------------------
def run(ws: Workspace, kind: str, callbacks=(), **overrides):  # noqa: ANN001, ANN201
    """One `assistant train KIND` run, with a freshly loaded base model (TRL wraps it with
    LoRA in place, so a model is never reused across runs)."""
    out = tempfile.mkdtemp(prefix=f"{kind}-", dir=ws.settings.data_dir)
    config = make_config(kind, out, **overrides)
    loaded = load_model(ws.settings)
    return train(ws.settings, kind, config, loaded=loaded, callbacks=list(callbacks)), config


def length_baselines(trainer) -> dict[str, float]:  # noqa: ANN001
    """Accuracy of 'the shorter / longer answer wins' on the pairs the trainer evaluated
    (ties count one half)."""
    ds = trainer.eval_dataset
    shorter = longer = 0.0
    for c, r in zip(ds["chosen_ids"], ds["rejected_ids"], strict=True):
        if len(c) == len(r):
            shorter += 0.5
            longer += 0.5
        else:
            shorter += len(c) < len(r)
            longer += len(c) > len(r)
    n = max(len(ds), 1)
    return {"shorter wins": shorter / n, "longer wins": longer / n}


def reward_bench(args, device: torch.device) -> None:  # noqa: ANN001
    ws = workspace(args.data, args.model_cache_dir, device)
    overrides = dict(
        max_length=args.max_length, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size, gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr, lora_r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=args.lora_dropout,
        lora_target_modules=(top_layers(ws.layers, int(args.lora_targets[3:]))
                             if args.lora_targets and args.lora_targets.startswith("top") else args.lora_targets),
        limit=args.limit,
        test_fraction=args.test_fraction, eval_rows=-1 if args.steps is None else 0,  # -1: all
        num_train_epochs=args.epochs, max_steps=args.steps or -1, seed=args.seed,
        **device_overrides(device),
    )
    meter = Meter()
    t0 = time.perf_counter()
    result, config = run(ws, "reward", [meter], **overrides)
    wall = time.perf_counter() - t0
    trainer, m = result.trainer, result.metrics
    v = result.version
    kept = len(trainer.train_dataset)
    per_update = args.batch_size * args.grad_accum
    steps_epoch = math.ceil(kept / per_update)
    steps = m["steps"]
    train_s = m.get("train_seconds") or wall
    dtype = "bf16" if config.bf16 else "fp32"
    print(f"\nreward model  {v.base_model} + LoRA r={args.lora_r} on {device.type} ({dtype}), "
          f"{torch.get_num_threads()} threads, {load_text()}")
    print(f"data          {ws.pairs} pairs imported; export: {v.data['train_rows']} train (limit "
          f"{args.limit}) / {v.data['test_rows']} held out (test_fraction {args.test_fraction})")
    print(f"              RewardTrainer kept {kept} train pairs <= max_length {args.max_length} "
          f"tokens ({v.data['train_rows'] - kept} dropped as longer)")
    print(f"config        batch {args.batch_size} x grad_accum {args.grad_accum} = {per_update} pairs/update, "
          f"lr {args.lr:g}, epochs {args.epochs:g}, max_length {args.max_length}, "
          f"LoRA r {config.lora_r} alpha {config.lora_alpha} dropout {config.lora_dropout} "
          f"on {args.lora_targets or config.lora_target_modules}")
    w = meter.window(min(1, steps - 1))
    print(f"steps         {steps} in {train_s:.0f} s ({train_s / max(steps, 1):.1f} s/step; median "
          f"{w['step_s']:.1f} s); {w['tokens'] / w['seconds']:.0f} trained tokens/s")
    if args.steps is not None:
        print(f"projection    one epoch = {steps_epoch} steps ~ {steps_epoch * train_s / steps / 60:.1f} min "
              f"of training (+ eval of the held-out pairs)")
        return
    held = len(trainer.eval_dataset)
    acc = m.get("heldout_accuracy")
    base = length_baselines(trainer)
    print(f"wall          {wall:.0f} s end to end (train {train_s:.0f} s, the rest: model load, "
          f"tokenizing, eval, saving)")
    print(f"\n{'held-out accuracy on ' + str(held) + ' pairs':40} value   vs shorter-wins")
    print(f"{'reward model (this run)':40} {acc:.3f}   {acc / base['shorter wins']:.2f}x")
    for name, value in base.items():
        print(f"{'baseline: ' + name:40} {value:.3f}")
    print(f"loss {m['first_loss']:.3f} -> {m['final_loss']:.3f}; target (issue): >= 0.55 "
          f"-> {'met' if acc >= 0.55 else 'NOT met'}")


def top_layers(n_layers: int, k: int) -> str:
    """LoRA on every linear layer of the top ``k`` decoder layers only: the backward pass then
    stops at layer ``n_layers - k`` (nothing below needs a gradient)."""
    names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    return ",".join(f"model.layers.{i}.{m}" for i in range(n_layers - k, n_layers) for m in names)


@dataclass
class Variant:
    name: str
    overrides: dict
    threads: int | None = None


VARIANTS = {
    "nodrop": Variant("lora_dropout 0 (not 0.05)", {"lora_dropout": 0.0}),
    "b2": Variant("batch 2", {"per_device_train_batch_size": 2}),
    "b8": Variant("batch 8", {"per_device_train_batch_size": 8}),
    "len256": Variant("max_length 256", {"max_length": 256}),
    "top8": Variant("LoRA on top 8 layers only", {"lora_target_modules": "top8"}),
    "threads1": Variant("1 thread", {}, threads=1),
    "ckpt": Variant("gradient checkpointing on", {"gradient_checkpointing": True}),
    "random": Variant("random batches (no length grouping)", {"train_sampling_strategy": "random"}),
}


def combine(spec: str) -> Variant:
    """``nodrop+b8``: several variants' changes at once."""
    parts = [VARIANTS[name] for name in spec.split("+")]
    if len(parts) == 1:
        return parts[0]
    return Variant(" + ".join(v.name.split(" (")[0] for v in parts),
                   {k: v for part in parts for k, v in part.overrides.items()},
                   threads=next((v.threads for v in parts if v.threads), None),
                   )


def throughput_one(ws: Workspace, kind: str, args, device, extra: dict, profile: bool = False,  # noqa: ANN001, ANN201
                   measure_peak: bool = False):
    meter = Meter()
    # The profiled step runs after the timed ones (the profiler slows the step it watches).
    callbacks = [meter] + ([ProfileStep(args.warmup + args.steps + 1)] if profile else [])
    overrides = dict(
        max_steps=args.warmup + args.steps + profile, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,  # one batch per step, as the table in docs/training.md
        max_length=args.max_length, eval_rows=0, limit=args.limit, seed=args.seed,
        **device_overrides(device),
    )
    overrides.update(extra)
    if overrides.get("lora_target_modules") == "top8":
        overrides["lora_target_modules"] = top_layers(ws.layers, 8)
    result, config = run(ws, kind, callbacks, **overrides)
    w = meter.window(args.warmup, args.steps)
    w["params"] = meter.params
    w["batch"] = config.per_device_train_batch_size
    w["max_length"] = config.max_length
    w["kept"] = len(result.trainer.train_dataset)
    if measure_peak:
        # The model's own peak: a plain forward/backward of the trained model on a full batch
        # (chosen and rejected: 2 x batch rows) of max_length tokens, no padding.
        w["model_peak_tps"] = plain_step_tokens_per_s(result.trainer.model, 2 * config.per_device_train_batch_size,
                                                      config.max_length)
    return w


def throughput_bench(args, device: torch.device) -> None:  # noqa: ANN001
    ws = workspace(args.data, args.model_cache_dir, device)
    peak, how = matmul_peak(device)
    from alignment.training.config import device_defaults

    bf16 = device_defaults()["bf16"] if device.type == "cpu" else torch.cuda.is_bf16_supported()
    dtype = "bf16" if bf16 else "fp32"
    threads = torch.get_num_threads()
    print(f"\ndevice     {device.type} ({dtype}), {threads} threads, {load_text()}")
    print(f"peak       {peak:.1f} GFLOP/s ({how}, {threads} threads): the reference for every %peak")
    if device.type == "cpu" and threads > 1:
        torch.set_num_threads(1)
        one, _ = matmul_peak(device)
        torch.set_num_threads(threads)
        print(f"           {one:.1f} GFLOP/s with 1 thread ({one / peak:.0%} of the {threads}-thread peak)")
    kinds = [k for k in ("dpo", "reward") if k in args.kinds]
    variants = [None] + ([combine(v) for v in (VARIANTS if args.variants == ["all"] else args.variants)]
                         if args.variants else [])
    if len(variants) > 1:
        variants.append(None)  # the baseline again at the end: drift shows as a gap between the two
    rows = []
    base_tps: dict[str, float] = {}
    model_peak: dict[str, float] = {}
    for kind in kinds:
        for i, variant in enumerate(variants):
            threads_before = torch.get_num_threads()
            if variant and variant.threads:
                torch.set_num_threads(variant.threads)
            try:
                w = throughput_one(ws, kind, args, device, variant.overrides if variant else {},
                                   profile=args.profile and i == 0, measure_peak=i == 0)
            finally:
                torch.set_num_threads(threads_before)
            tps = w["tokens"] / w["seconds"]
            gflops = w["useful_flop"] / w["seconds"] / 1e9
            if i == 0:
                base_tps[kind] = tps
                prm = w["params"]
                ref = " + 2P per reference token" if kind == "dpo" else ""
                head = (f"; + 4H (2H in the reference) per position the LM head scored, H = "
                        f"{prm.head / 1e6:.1f}M: {w['head_positions'] / w['steps']:.0f} a step"
                        if w["head_positions"] else "")
                print(f"\n{kind}: P = {prm.p / 1e6:.1f}M (body matmul weights), P_lora = "
                      f"{prm.lora / 1e6:.2f}M, embedding lookup {prm.embedding / 1e6:.1f}M not counted; "
                      f"FLOP = (4P + 6 P_lora) per trained token{ref}{head}")
            prm = w["params"]
            note = f" (backward through {prm.p_backward / 1e6:.1f}M of P)" if prm.p_backward != prm.p else ""
            name = variant.name if variant else ("baseline" if i == 0 else "baseline, again")
            rows.append((kind, name, w, tps, gflops, tps / base_tps[kind], load_text()))
            if "model_peak_tps" in w:
                model_peak[kind] = w["model_peak_tps"]
                print(f"  {kind:6} model peak (plain fp32 forward/backward, {2 * w['batch']} x {w['max_length']} "
                      f"tokens, no padding): {model_peak[kind]:.0f} tok/s")
            print(f"  {kind:6} {rows[-1][1]:34} {tps:7.0f} tok/s  {gflops:6.1f} GFLOP/s  "
                  f"{gflops / peak:6.1%} of peak  ({w['steps']} steps, {w['step_s']:.1f} s/step, {load_text()})"
                  f"{note}",
                  flush=True)

    print(f"\nSummary ({device.type}, {dtype}; peak {peak:.1f} GFLOP/s measured in this run; "
          f"{args.steps} timed steps after {args.warmup} warm-up)")
    print(f"{'trainer':7} {'run':34} {'batch':>5} {'max_len':>7} {'tok/step':>8} {'pad %':>5} "
          f"{'s/step':>6} {'tok/s':>7} {'GFLOP/s':>8} {'%peak':>6} {'exec %pk':>8} {'vs base':>7} {'%model pk':>9}")
    for kind, name, w, tps, gflops, ratio, _ in rows:
        pad = 1 - w["tokens"] / w["padded"] if w["padded"] else 0
        executed = w["executed_flop"] / w["seconds"] / 1e9
        print(f"{kind:7} {name:34} {w['batch']:>5} {w['max_length']:>7} {w['tokens'] / w['steps']:>8.0f} "
              f"{pad:>5.0%} {w['step_s']:>6.1f} {tps:>7.0f} {gflops:>8.1f} {gflops / peak:>6.1%} "
              f"{executed / peak:>8.1%} {ratio:>6.2f}x {tps / model_peak[kind] if kind in model_peak else 0:>9.1%}")
    after, _ = matmul_peak(device)
    print("%peak: useful FLOPs (non-pad tokens); exec %pk: FLOPs of the padded batch. "
          "Target (issue): >= 30% of peak.")
    print(f"peak measured again after the runs: {after:.1f} GFLOP/s ({load_text()}); a big gap to "
          f"{peak:.1f} means other processes took the cores in between.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reward", action="store_true", help="Reward model accuracy run.")
    ap.add_argument("--throughput", action="store_true", help="DPO / reward training throughput.")
    ap.add_argument("--data", type=Path, default=HH_FILE, help="hh-rlhf JSONL file.")
    ap.add_argument("--model-cache-dir", type=Path,
                    default=DEV_CACHE if DEV_CACHE.is_dir() else None,
                    help="Converted-checkpoint cache (shared with the app; default "
                    f"{DEV_CACHE} if it exists, else a fresh one in the temporary data dir).")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's).")
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("--reward")
    g.add_argument("--max-length", type=int, default=None,
                   help="Tokens per sequence [reward 384; throughput 512].")
    g.add_argument("--batch-size", type=int, default=None, help="Pairs per step [reward 4, throughput 4].")
    g.add_argument("--eval-batch-size", type=int, default=8)
    g.add_argument("--grad-accum", type=int, default=2)
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2 r).")
    g.add_argument("--lora-dropout", type=float, default=None, help="LoRA dropout [product's 0.05].")
    g.add_argument("--lora-targets", default=None,
                   help="LoRA target modules [product's all-linear]; topK = every linear layer "
                   "of the top K decoder layers only.")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--limit", type=int, default=None, help="Training pairs [reward 1000; throughput all].")
    g.add_argument("--test-fraction", type=float, default=0.15)
    g.add_argument("--steps", type=int, default=None,
                   help="--reward: run N steps and project the epoch; --throughput: timed steps [4].")
    t = ap.add_argument_group("--throughput")
    t.add_argument("--warmup", type=int, default=1, help="Untimed first steps.")
    t.add_argument("--kinds", nargs="+", default=["dpo", "reward"], choices=["dpo", "reward"])
    t.add_argument("--variants", nargs="*", default=None,
                   help=f"One change at a time vs the baseline: {' '.join(VARIANTS)} or all; "
                   "join names with + to combine them (nodrop+b8).")
    t.add_argument("--profile", action="store_true", help="torch.profiler table of one step.")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    if not (args.reward or args.throughput):
        ap.error("choose --reward and/or --throughput")
    if not args.data.is_file():
        ap.error(f"{args.data} is missing: pass --data or set ASSISTANT_SHARED_DATA")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    if args.reward:
        reward_args = argparse.Namespace(**vars(args))
        reward_args.max_length = args.max_length or 384
        reward_args.batch_size = args.batch_size or 4
        reward_args.limit = args.limit or 1000
        reward_bench(reward_args, device)
    if args.throughput:
        tp_args = argparse.Namespace(**vars(args))
        tp_args.max_length = args.max_length or 512
        tp_args.batch_size = args.batch_size or 4
        tp_args.steps = args.steps or 4
        throughput_bench(tp_args, device)


if __name__ == "__main__":
    main()
