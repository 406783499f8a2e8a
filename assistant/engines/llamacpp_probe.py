"""The child process of :mod:`assistant.engines.llamacpp_check`: load a GGUF file with the
llama.cpp engine in one weight layout and answer a test question, as the app would.

    python -m assistant.engines.llamacpp_probe MODEL.gguf LAYOUT THREADS

Prints one JSON line (``{"answer": ..., "seconds": ...}``) and exits 0; a crash in llama.cpp
ends this process, not its parent.
"""

from __future__ import annotations

import json
import sys
import time

from assistant.engines.llamacpp import LlamaCppGenerator
from assistant.engines.generation import GenerationParams

# Longer than one prompt batch (128 tokens), so that batched matrix products run as they do
# for a question with sources, then a few decoded tokens.
_CONTEXT = " ".join(
    f"Paragraph {i}: the river town kept its records in a stone hall beside the bridge, and "
    "every spring the clerks copied the ledgers before the floods."
    for i in range(1, 9))
MESSAGES = [
    {"role": "system", "content": f"Answer from this text.\n{_CONTEXT}"},
    {"role": "user", "content": "Where were the records kept?"},
]
PARAMS = GenerationParams(temperature=0.0, max_new_tokens=8)


def main(argv: list[str]) -> int:
    gguf, layout, threads = argv[0], argv[1], int(argv[2])
    started = time.perf_counter()
    engine = LlamaCppGenerator(gguf, "check", context_window=1024, threads=threads,
                               layout=layout)
    answer = "".join(engine.stream(MESSAGES, PARAMS))
    print(json.dumps({"answer": answer, "seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
