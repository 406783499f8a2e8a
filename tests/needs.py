"""A part the tests need (llama.cpp's build, Debian's chromium, PostgreSQL's server) that is
missing: under CI (``CI`` set, as ``.ci/run`` does) the test fails, so that a green run cannot
hide an untested feature; elsewhere it skips, and ``make test`` prints the reason (``-rs``)."""

from __future__ import annotations

import os

import pytest


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing part fails the run)", pytrace=False)
    pytest.skip(reason)
