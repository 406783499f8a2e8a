"""What scoring only the labelled positions saves on a CPU (``alignment.training.lm_head``).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/lm_head.py [--rows 4] [--rounds 3] \
        [--shape 800:10 --shape 120:80]

One forward + backward of the embedded model (fp32, LoRA r 16 on every linear layer, TRL's
fused LM head as its trainers add it) on ``--rows`` rows of PROMPT:ANSWER random tokens,
the prompt's labels masked (-100) as SFT on prompt + completion and DPO mask them: with TRL's
CPU path (every position projected through the 49,152-word head, masked ones zeroed after)
and inside ``labelled_positions_only`` (labelled positions only). Rounds alternate the two in
one process; the median of each and their ratio are printed. 800:10 is a grounded SFT row
(the chat's prompt with four sources, a short cited answer); 120:80 an hh-rlhf DPO answer.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from peft import LoraConfig, get_peft_model
from trl.trainer.utils import add_fused_lm_head

from alignment.training.lm_head import labelled_positions_only
from assistant.config import get_settings
from assistant.engines.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", action="append", help="PROMPT:ANSWER tokens (repeatable)")
    a = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    shapes = [tuple(int(x) for x in s.split(":")) for s in (a.shape or ["800:10", "120:80"])]
    loaded = load_model(get_settings())
    model = loaded.model.float()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    print(f"{loaded.model_id} on {loaded.device}, {torch.get_num_threads()} threads, "
          f"{a.rows} rows, {a.rounds} rounds")

    def step(ids: torch.Tensor, labels: torch.Tensor) -> float:
        model.zero_grad()
        t = time.perf_counter()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return time.perf_counter() - t

    torch.manual_seed(0)
    for prompt, answer in shapes:
        ids = torch.randint(0, model.config.vocab_size, (a.rows, prompt + answer))
        labels = ids.clone()
        labels[:, :prompt] = -100
        step(ids, labels)  # warm-up
        every, only = [], []
        for _ in range(a.rounds):
            every.append(step(ids, labels))
            with labelled_positions_only():
                only.append(step(ids, labels))
        e, o = statistics.median(every), statistics.median(only)
        print(f"prompt {prompt} + answer {answer} tokens: every position {e:.2f} s, "
              f"labelled only {o:.2f} s: {o / e:.2f}x the time ({1 - o / e:.0%} saved)")


if __name__ == "__main__":
    main()
