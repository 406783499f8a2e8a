"""fp32 against bf16 on this CPU, in one process: what ``ASSISTANT_DTYPE=auto`` is decided on.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dtype.py [--threads 2] [--rounds 3]

Rows (best of ``--rounds``, each dtype measured back to back so that load on the machine hits
both alike): a 2048x2048 matmul (GFLOP/s); the embedded model reading a four-source prompt
(~800 tokens, one forward pass, prompt tokens/s); decoding 64 tokens greedily with the
transformers engine (tokens/s after the first); one LoRA training step (r 16 on every linear
layer, batch 4 x 256 tokens, forward + backward + AdamW, trained tokens/s) with the weights in
fp32 and bf16 autocast, as TRL's ``bf16=True`` runs on a CPU. Printed: each figure and the
bf16/fp32 ratio, under the CPU's name and features (:mod:`assistant.cpu`).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from assistant.cpu import report
from assistant.chat.prompting import build_messages
from engines import embedded_model, four_sources  # bench/engines.py, beside this script


def best(fn, rounds: int) -> float:  # noqa: ANN001 - a timed callable
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul(dtype: torch.dtype, rounds: int) -> float:
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    return 2 * n**3 / best(lambda: a @ b, rounds) / 1e9


def load(checkpoint, dtype: torch.dtype):  # noqa: ANN001, ANN201 - path, model
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()


def prefill(model, ids: torch.Tensor, rounds: int) -> float:  # noqa: ANN001 - a causal LM
    with torch.inference_mode():
        model(ids, logits_to_keep=1)
        return ids.shape[1] / best(lambda: model(ids, logits_to_keep=1), rounds)


def decode(model, tokenizer, rounds: int) -> float:  # noqa: ANN001 - a causal LM, tokenizer
    ids = tokenizer("Write a long story about a dragon who loves books.", return_tensors="pt")
    n = 64

    def run() -> None:
        with torch.inference_mode():
            model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    run()
    # the first token is the prompt's cost; the rest are decode steps
    return (n - 1) / best(run, rounds)


def train_step(checkpoint, bf16: bool, rounds: int) -> float:  # noqa: ANN001 - path
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load(checkpoint, torch.float32).train(), LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (4, 256))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    return ids.numel() / best(step, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    threads, _, checkpoint = embedded_model(args.threads)
    torch.set_num_threads(threads)
    print(report())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    messages = build_messages("You are a helpful assistant.", [], "Summarise the sources.",
                              four_sources())
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    rows = []
    rows.append(("matmul 2048x2048, GFLOP/s", matmul(torch.float32, args.rounds),
                 matmul(torch.bfloat16, args.rounds)))
    fp32, bf16 = load(checkpoint, torch.float32), load(checkpoint, torch.bfloat16)
    rows.append((f"prefill {ids.shape[1]} tokens, tok/s", prefill(fp32, ids, args.rounds),
                 prefill(bf16, ids, args.rounds)))
    rows.append(("decode 64 tokens, tok/s", decode(fp32, tokenizer, args.rounds),
                 decode(bf16, tokenizer, args.rounds)))
    del fp32, bf16
    rows.append(("LoRA train step 4x256, tok/s", train_step(checkpoint, False, args.rounds),
                 train_step(checkpoint, True, args.rounds)))
    print(f"{'':34} {'fp32':>10} {'bf16':>10} {'bf16/fp32':>10}")
    for name, a, b in rows:
        print(f"{name:34} {a:10.1f} {b:10.1f} {b / a:9.2f}x")


if __name__ == "__main__":
    main()
