"""Mask e-mail addresses and phone numbers in exported training data.

The phone pattern only takes numbers shaped like phone numbers (a ``+`` country code,
an area code in brackets, ``555-123-4567`` style groups, or a trunk ``0`` followed by
grouped digits) and 7-15 digits in all, so years ("in 1066"), dates (2024-05-01),
amounts (1,200,000), decimals and version numbers in ordinary text stay as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

EMAIL_MASK = "[EMAIL]"
PHONE_MASK = "[PHONE]"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)

_SEP = r"[ .\-]"  # no newlines: a number never spans lines
_PHONE = re.compile(
    rf"""
    (?<![\w+.,/:-])                 # not the tail of a word, number, date, URL or version
    (?:
        \+\d{{1,3}}{_SEP}?(?:\(\d{{1,4}}\){_SEP}?)?\d{{1,4}}(?:{_SEP}?\d{{2,4}}){{1,4}}  # +44 20 7946 0958
      | \(\d{{2,4}}\){_SEP}?\d{{3,4}}{_SEP}\d{{3,4}}                               # (555) 123-4567
      | \d{{3}}([.\-])\d{{3}}\1\d{{4}}                                             # 555-123-4567
      | 0\d{{2,4}}{_SEP}\d{{3,4}}{_SEP}?\d{{3,4}}                                  # 020 7946 0958
    )
    (?![\w@]|[.,/:-]\d)             # not followed by more of a word or number
    """,
    re.VERBOSE,
)


def _phone(match: re.Match[str], counts: Counter) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    if not 7 <= digits <= 15:  # E.164 allows at most 15 digits
        return match.group(0)
    counts["phone"] += 1
    return PHONE_MASK


def mask_text(text: str, counts: Counter | None = None) -> str:
    """``text`` with e-mail addresses and phone numbers replaced by ``[EMAIL]`` / ``[PHONE]``;
    ``counts`` (when given) is incremented under "email" and "phone"."""
    counts = counts if counts is not None else Counter()

    def email(_m: re.Match[str]) -> str:
        counts["email"] += 1
        return EMAIL_MASK

    text = _EMAIL.sub(email, text)
    return _PHONE.sub(lambda m: _phone(m, counts), text)


def mask_value(value: Any, counts: Counter | None = None) -> Any:
    """Mask every string inside ``value`` (nested dicts and lists), returning a copy."""
    if isinstance(value, str):
        return mask_text(value, counts)
    if isinstance(value, dict):
        return {k: mask_value(v, counts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, counts) for v in value]
    return value
