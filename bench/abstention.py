"""The trade-off behind ``answers.min_abstain_probability``: how much a trained version's own
"The documents do not say." is worth at each threshold, on questions it was not trained on.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/abstention.py --data-dir DIR --version v1 \\
        --title Computational_complexity_theory --untrained [--limit 120]

``DIR`` is a data folder where the SQuAD file's articles were imported and ``--version``
trained (``bench/grounded.py --quote`` makes one). The questions of ``--title`` (with
``--untrained``: only those the folder holds no grounded example of, so that a threshold can
be chosen on the training article without the questions trained on) are asked as the
evaluation asks them (:func:`alignment.evaluate.grounded_answers`: the chat's retrieval,
prompt and engine, greedy, with each token's log-probability), and the answers are formed
in quoted mode at each threshold of :data:`alignment.evaluate.ABSTAIN_CURVE`.

Printed for the version and base: answer accuracy, abstention on unanswerable questions and
false abstention at each threshold, with 95% Wilson intervals, and the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignment.answering import answering  # noqa: E402
from alignment.evaluate import (  # noqa: E402
    ABSTAIN_CURVE,
    EvalOptions,
    GroundedItem,
    _similarity,
    form_all,
    grounded_answers,
    judge_item,
)
from alignment.on_policy import grounded_examples  # noqa: E402
from alignment.squad import ground, parse_squad, pick, select_articles, span_in_context  # noqa: E402
from assistant.bootstrap import open_database, open_library, open_registry  # noqa: E402
from assistant.chat.prompting import build_messages  # noqa: E402
from assistant.config import get_settings  # noqa: E402
from assistant.cpu import report as cpu_report  # noqa: E402
from assistant.versions import BASE_VERSION  # noqa: E402
from bench.evidence import default_file, pct  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--title", required=True)
    ap.add_argument("--untrained", action="store_true",
                    help="only the questions the folder holds no grounded example of")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    os.environ["ASSISTANT_DATA_DIR"] = str(args.data_dir)
    settings = get_settings()
    db = open_database(settings)
    registry = open_registry(settings, db)
    print(cpu_report())
    _, articles = parse_squad(args.file or default_file())
    questions = [q for a in select_articles(articles, (args.title,)) for q in a.questions
                 if span_in_context(q)]
    if args.untrained:
        trained = {e.question for e in grounded_examples(db)}
        questions = [q for q in questions if q.question not in trained]
    library = open_library(settings, db)
    items = []
    for q in pick(questions, args.limit):
        ex = ground(q, library)
        items.append(GroundedItem(build_messages(settings.generation.system_prompt, [], q.question, ex.sources),
                                  ex.judged_answers, tuple(s.text for s in ex.sources), q.question))
    ans = [k for k, i in enumerate(items) if i.answers]
    una = [k for k, i in enumerate(items) if not i.answers]
    print(f"{args.title}: {len(items)} questions ({len(ans)} answerable, {len(una)} unanswerable)"
          + (", none of them trained on" if args.untrained else ""))
    similarity = _similarity(settings)
    options = EvalOptions()
    with answering(settings, registry, {args.version, BASE_VERSION},
                   repetition_penalty=settings.generation.repetition_penalty) as models:
        for name in (args.version, BASE_VERSION):
            answered, seconds = grounded_answers(models, name, items, "quoted", options)
            known = sum(a.probability is not None for a in answered if a.abstained)
            print(f"\n{name}: {sum(a.abstained for a in answered)} abstentions by the model "
                  f"({known} with a probability), {seconds / len(items):.2f} s an answer")
            print("min_abstain_probability  accuracy (answerable)  abstention (unanswerable)  false abstention")
            for threshold in ABSTAIN_CURVE:
                said = form_all("quoted", answered, items, settings, similarity, threshold)
                v = [judge_item(a, i) for a, i in zip(said, items)]
                print(f"{threshold:>23g}  {pct(sum(v[k].correct for k in ans), len(ans)):21s}  "
                      f"{pct(sum(v[k].abstained for k in una), len(una)):25s}  "
                      f"{pct(sum(v[k].abstained for k in ans), len(ans))}")


if __name__ == "__main__":
    main()
