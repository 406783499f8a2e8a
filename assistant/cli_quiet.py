"""Keep the model libraries' own output out of a command's output.

Progress bars ("Loading weights ...", "Tokenizing train dataset ...") and warnings about the
libraries' internals (deprecations, advisory notes) are about the libraries, not what was
asked; the commands print their own phases. ``-v`` keeps them. The libraries read these
settings when first imported, which the commands do after calling :func:`quiet_libraries`.
"""

from __future__ import annotations

import logging
import os
import warnings

#: Modules whose warnings are hidden (matched against the module that raises them).
LIBRARIES = r"(transformers|sentence_transformers|torch|huggingface_hub|datasets|trl|peft|accelerate)\b"


def quiet_libraries() -> None:
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", module=LIBRARIES)
