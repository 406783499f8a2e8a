"""Where a conversation's training data comes from, read off ``Conversation.source``:

* ``feedback``: a chat held in the app (source NULL): ratings, choices, edits;
* ``imported``: public data imported as is (``hh-rlhf:...``, ``squad:...``);
* ``synthetic``: grounded examples made from the library's documents (``synth:...``).

The export, the Feedback page and ``train grounded`` filter by it.
"""

from __future__ import annotations

ORIGINS: tuple[str, ...] = ("feedback", "imported", "synthetic")
ORIGIN_FILTERS: tuple[str, ...] = ("all", *ORIGINS)

#: Source prefixes of grounded examples (a question, its retrieved sources, a cited answer).
SQUAD_PREFIX = "squad:"
SYNTH_PREFIX = "synth:"
GROUNDED_PREFIXES: tuple[str, ...] = (SQUAD_PREFIX, SYNTH_PREFIX)


def origin_of(source: str | None) -> str:
    if source is None:
        return "feedback"
    if source.startswith(SYNTH_PREFIX):
        return "synthetic"
    return "imported"


def is_grounded(source: str | None) -> bool:
    return source is not None and source.startswith(GROUNDED_PREFIXES)


def matches(source: str | None, origin: str) -> bool:
    """Whether a conversation of ``source`` passes the filter ``origin`` ("all" or one of
    :data:`ORIGINS`)."""
    if origin not in ORIGIN_FILTERS:
        raise ValueError(f"origin must be one of {', '.join(ORIGIN_FILTERS)}, not {origin!r}")
    return origin == "all" or origin_of(source) == origin
