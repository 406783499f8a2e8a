"""llama-cpp-python's OpenAI-compatible server, started in the weight layout that is safe on
this CPU (``Llama(...)``, which the server builds, does not expose it; llama.cpp's AMX layout
crashes on some AMX hosts: :mod:`assistant.engines.llamacpp`).

    python -m assistant.engines.llamacpp_server --config_file server.json   # or its other flags

Every argument goes to ``python -m llama_cpp.server`` unchanged. ``ASSISTANT_LLAMACPP__LAYOUT``
(auto, repacked, plain) chooses the layout, as it does for the in-process engine.
"""

from __future__ import annotations

import logging
import os
import runpy

from assistant.engines.llamacpp import default_layout, weight_layout

log = logging.getLogger(__name__)


def main() -> None:
    layout = os.environ.get("ASSISTANT_LLAMACPP__LAYOUT", "auto")
    layout = default_layout() if layout == "auto" else layout
    log.info("llama.cpp server: %s weight layout", layout)
    with weight_layout(layout):
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
