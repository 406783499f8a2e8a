"""Grounded answers that cite their sources, measured through the product's own commands on
the embedded model: train on one SQuAD article's questions, evaluate on the other's.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/grounded.py [--file squad2_dev_2_articles.json]
        [--train-title Computational_complexity_theory] [--eval-title Normans]
        [--train-limit 160] [--eval-limit 80] [--sft-steps 25] [--dpo-steps 15 | --no-dpo] [--lr LR]
        [--quote] [--calibration] [--answer-mode free|quoted|extractive ...]

In a fresh data folder (``--data-dir``, default a temporary one), each step is the CLI a
user runs, timed:

1. ``assistant data import squad FILE --no-examples``: both articles into the library;
2. ``assistant data import squad FILE --title TRAIN --limit N --no-documents``: grounded
   examples from the training article only (or, with ``--synth K``, ``assistant data synth
   --document TRAIN.txt --per-chunk K``: no gold questions, the model writes them from the
   training article's chunks);
3. ``assistant data on-policy``: the base model answers them (llama.cpp by default), the
   bad answers become pairs;
4. ``assistant train grounded --steps S --dpo-steps D``: SFT, then DPO on top (with
   ``--calibration``, the import left ~30% of the training article's paragraphs out, and
   ``assistant models calibrate VERSION --grounded-file FILE --grounded-title TRAIN`` chooses
   each version's abstention threshold on them before it is evaluated);
5. ``assistant eval VERSION --against base --grounded-file FILE --grounded-title EVAL``:
   the held-out article's questions, asked with the sources retrieval finds now; once for
   the SFT version and once for the DPO one.

Printed (and written to ``--out`` as JSON): each step's wall time, the import and pair
counts, and for base, SFT and DPO: answer accuracy, citation accuracy (of the correct
answers, the share citing a source that holds the answer), correct-and-cited rate and
abstention on the unanswerable questions, with 95% Wilson intervals and the sign test's
verdict against base. The shared data file is found through ``ASSISTANT_SHARED_DATA`` (as
the tests do) unless ``--file`` is given.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_file() -> Path:
    from tests.shared_data import SHARED_DATA

    return SHARED_DATA / "squad2_dev_2_articles.json"


STEPS = ("documents", "examples", "on-policy", "train", "eval")


def cli(env: dict, *args: str) -> tuple[str, float]:
    started = time.perf_counter()
    print(f"$ assistant {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "assistant.cli", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], flush=True)
        raise SystemExit(f"`assistant {' '.join(args)}` failed ({proc.returncode})")
    print(f"  ({seconds:.0f} s)", flush=True)
    return proc.stdout, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", type=Path, default=None)
    p.add_argument("--train-title", default="Computational_complexity_theory")
    p.add_argument("--eval-title", default="Normans")
    p.add_argument("--train-limit", type=int, default=160)
    p.add_argument("--eval-limit", type=int, default=80)
    p.add_argument("--unanswerable-share", type=float, default=0.25,
                   help="Cap on v2's unanswerable questions among the training examples.")
    p.add_argument("--on-policy-limit", type=int, default=None,
                   help="Examples the base model answers (default: all imported).")
    p.add_argument("--sft-steps", type=int, default=25)
    p.add_argument("--dpo-steps", type=int, default=15)
    p.add_argument("--eval-versions", choices=["all", "last"], default="all",
                   help="Evaluate every registered version (SFT and DPO) or the last only.")
    p.add_argument("--from-step", choices=STEPS, default=STEPS[0],
                   help="Resume in an earlier --data-dir from this step.")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=None, help="Default: train grounded's.")
    p.add_argument("--lr", type=float, default=None, help="SFT learning rate (default: the product's).")
    p.add_argument("--no-dpo", action="store_true", help="SFT only: no on-policy pairs, no DPO.")
    p.add_argument("--quote", action="store_true",
                   help="Reference answers quote the sentence holding the answer (data import squad --quote).")
    p.add_argument("--calibration", action="store_true",
                   help="Import with --calibration and calibrate each version on the training article's "
                   "paragraphs left out (`assistant models calibrate`) before evaluating it.")
    p.add_argument("--answer-mode", action="append", choices=["free", "quoted", "extractive"], default=None,
                   help="Evaluate in this answering mode (repeatable; default: the chat's).")
    p.add_argument("--synth", type=int, default=0, metavar="K",
                   help="No gold questions: the training examples are `data synth --per-chunk K` "
                        "over the training article's document only.")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    file = a.file or default_file()
    data_dir = a.data_dir or Path(tempfile.mkdtemp(prefix="bench-grounded-"))
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    times: dict[str, float] = {}
    out: dict = {"env": {k: v for k, v in os.environ.items() if k.startswith("ASSISTANT_")},
                 "file": str(file), "train_title": a.train_title, "eval_title": a.eval_title,
                 "args": {k: str(v) for k, v in vars(a).items()}, "data_dir": str(data_dir)}

    todo = [s for s in STEPS[STEPS.index(a.from_step):] if not (a.no_dpo and s == "on-policy")]
    if "documents" in todo:
        _, times["import_documents"] = cli(env, "data", "import", "squad", str(file), "--no-examples")
    if "examples" in todo and a.synth:
        text, times["synth"] = cli(env, "data", "synth", "--document", f"{a.train_title}.txt",
                                   "--per-chunk", str(a.synth), "--limit", "1000")
        out["synth"] = text.strip().splitlines()[-1]
    elif "examples" in todo:
        text, times["import_examples"] = cli(env, "data", "import", "squad", str(file), "--no-documents",
                                             "--title", a.train_title, "--limit", str(a.train_limit),
                                             "--unanswerable-share", str(a.unanswerable_share),
                                             *(["--quote"] if a.quote else []),
                                             *(["--calibration"] if a.calibration else []))
        out["import"] = text.strip().splitlines()[-1]
    if "on-policy" in todo:
        limit = ["--limit", str(a.on_policy_limit)] if a.on_policy_limit else []
        text, times["on_policy"] = cli(env, "data", "on-policy", *limit)
        out["on_policy"] = text.strip()
    if "train" in todo:
        extra = (["--no-dpo"] if a.no_dpo else ["--dpo-steps", str(a.dpo_steps)])
        extra += ["--max-length", str(a.max_length)] if a.max_length else []
        extra += ["--lr", str(a.lr)] if a.lr else []
        text, times["train"] = cli(env, "train", "grounded", "--steps", str(a.sft_steps), *extra,
                                   "--batch-size", str(a.batch_size), "--test-fraction", "0.1")
        out["train"] = text.strip()
        versions = [line.split()[1].rstrip(":") for line in text.splitlines() if line.startswith("Registered ")]
    else:
        from assistant.bootstrap import open_database, open_registry
        from assistant.config import Settings

        s0 = Settings(data_dir=data_dir)
        versions = [v.name for v in open_registry(s0, open_database(s0)).list() if v.kind != "reward"]
    if a.eval_versions == "last":
        versions = versions[-1:]
    evals: dict[str, list[str | None]] = {}
    modes = a.answer_mode or [None]
    for version in versions:
        if a.calibration:
            text, times[f"calibrate_{version}"] = cli(env, "models", "calibrate", version, "--grounded-file",
                                                      str(file), "--grounded-title", a.train_title)
            out.setdefault("calibration", {})[version] = text.strip()
        for mode in modes:
            _, times[f"eval_{version}{f'_{mode}' if mode else ''}"] = cli(
                env, "eval", version, "--against", "base", "--grounded-file", str(file),
                "--grounded-title", a.eval_title, "--grounded", str(a.eval_limit), "--prompts", "0",
                "--qa", "0", *(["--answer-mode", mode] if mode else []))
            evals.setdefault(version, []).append(mode)
    os.environ["ASSISTANT_DATA_DIR"] = str(data_dir)
    from assistant.bootstrap import open_database, open_registry
    from assistant.config import Settings

    settings = Settings(data_dir=data_dir)
    registry = open_registry(settings, open_database(settings))
    keys = ("grounded_accuracy", "grounded_cited", "citation_accuracy", "abstention", "false_abstention")
    results = {}
    for version in versions:
        for mode, e in zip(evals[version], registry.evaluations(version)[-len(modes):], strict=True):
            m = e.metrics
            key = f"{version}/{mode or 'default'}"
            results[key] = {k: m.get(k) for k in (*keys, *(f"{k}_low" for k in keys), *(f"{k}_high" for k in keys),
                                                  *(f"{k}_verdict" for k in keys), "citation_n",
                                                  "grounded_answerable", "grounded_unanswerable")}
            results[f"base/{mode or 'default'}"] = ({k: m.get(f"baseline_{k}") for k in keys}
                                                    | {"citation_n": m.get("baseline_citation_n")})
            results[key]["examples"] = m.get("grounded_examples")
            results[key]["kind"] = registry.get(version).kind
            results[key]["train_seconds"] = registry.get(version).metrics.get("train_seconds")
    out.update(times=times, results=results)
    print(json.dumps(out, indent=2), flush=True)
    if a.out:
        a.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
