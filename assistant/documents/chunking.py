"""Split parsed sections into overlapping chunks measured in embedding-model tokens.

Chunks end on sentence boundaries where possible (a sentence longer than a whole chunk is
cut by tokens), never cross a section (so each keeps one page / heading), and repeat about
``overlap`` tokens of the previous chunk so that an answer straddling a boundary is whole
in at least one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from assistant.storage.passages import Chunk

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from assistant.documents.parsing import Section

# A sentence ends at . ! ? (optionally followed by a quote or bracket, kept with it) before
# whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?][\"'”’)\]])\s+|(?<=[.!?])\s+")


def split_units(text: str) -> list[str]:
    """Sentences, with a paragraph's last sentence carrying the "\\n\\n" that followed it."""
    units: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        sentences = [s for s in _SENTENCE_END.split(para) if s.strip()]
        if units:
            units[-1] = units[-1].rstrip() + "\n\n"
        units.extend(s.strip() + " " for s in sentences)
    if units:
        units[-1] = units[-1].rstrip()
    return units


def _hard_split(unit: str, size: int, tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """Cut one over-long sentence into pieces of at most ``size`` tokens (by offsets).

    Cuts fall between words where the window has a word start: a piece that begins inside a
    word re-tokenises into more tokens than its slice had (and gains a space mid-word).
    """
    offsets = tokenizer(unit, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    pieces = []
    start = 0
    while start < len(offsets):
        end = min(start + size, len(offsets))
        if end < len(offsets):
            for cut in range(end, start, -1):
                if offsets[cut][0] > offsets[cut - 1][1]:  # whitespace before: a word starts
                    end = cut
                    break
        # A single word longer than a chunk is still cut inside it; make sure the piece fits.
        while end - start > 1 and _count(tokenizer, unit[offsets[start][0] : offsets[end - 1][1]]) > size:
            end -= 1
        pieces.append(unit[offsets[start][0] : offsets[end - 1][1]] + " ")
        start = end
    return pieces


def _count(tokenizer: PreTrainedTokenizerFast, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def chunk_sections(
    sections: Sequence[Section],
    count_tokens: Callable[[Sequence[str]], list[int]],
    tokenizer: PreTrainedTokenizerFast,  # used only to cut over-long sentences
    size: int = 200,
    overlap: int = 40,
) -> list[Chunk]:
    if overlap >= size:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than chunk size ({size})")
    chunks: list[Chunk] = []
    for section in sections:
        units = split_units(section.text)
        lengths = count_tokens(units)
        expanded: list[tuple[str, int]] = []
        for unit, n in zip(units, lengths, strict=True):
            if n <= size:
                expanded.append((unit, n))
            else:
                pieces = _hard_split(unit, size, tokenizer)
                expanded.extend(zip(pieces, count_tokens(pieces), strict=True))

        window: list[tuple[str, int]] = []
        total = 0
        for unit, n in expanded:
            if window and total + n > size:
                _emit(chunks, window, section)
                # Carry the tail of the last chunk forward as overlap.
                carry: list[tuple[str, int]] = []
                carried = 0
                for prev in reversed(window):
                    if carried + prev[1] > overlap or carried + prev[1] + n > size:
                        break
                    carry.insert(0, prev)
                    carried += prev[1]
                window, total = carry, carried
            window.append((unit, n))
            total += n
        if window:
            _emit(chunks, window, section)
    return chunks


def _emit(chunks: list[Chunk], window: list[tuple[str, int]], section: Section) -> None:
    text = "".join(u for u, _ in window).strip()
    if text:
        chunks.append(
            Chunk(
                position=len(chunks),
                text=text,
                token_count=sum(n for _, n in window),
                page=section.page,
                heading=section.heading,
            )
        )
