"""Paths to the project's real data sets (shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

# The project's real data sets live in shared/data beside the checkout (CI clones main with
# shared/ beside it); ASSISTANT_SHARED_DATA points elsewhere.
SHARED_DATA = Path(
    os.environ.get("ASSISTANT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
HH_FILE = SHARED_DATA / "hh_rlhf_harmless_test_first1200.jsonl"


def shared_file(path: Path) -> Path:
    assert path.is_file(), (
        f"{path} is missing: these tests use the project's shared data; "
        "set ASSISTANT_SHARED_DATA to the folder that holds it"
    )
    return path
