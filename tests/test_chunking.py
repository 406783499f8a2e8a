"""assistant.documents.chunking with the real MiniLM tokenizer: sizes, overlap, sentence boundaries,
hard splits of over-long sentences, sections and locations."""

from __future__ import annotations

import re

import pytest

from assistant.documents.chunking import Chunk, chunk_sections, split_units
from assistant.documents.embedding import Embedder
from assistant.documents.parsing import Section

TOPICS = ["rivers", "castles", "engines", "orchards", "violins", "glaciers", "markets", "comets"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def chunk(embedder: Embedder, sections: list[Section], size: int, overlap: int) -> list[Chunk]:
    return chunk_sections(sections, embedder.count_tokens, embedder.tokenizer, size=size, overlap=overlap)


def tokens(embedder: Embedder, text: str) -> int:
    return embedder.count_tokens([text])[0]


def sentences(n: int, word: str = "item", start: int = 0) -> list[str]:
    """Distinct sentences of roughly ten tokens each."""
    return [
        f"Sentence {i} tells about the {TOPICS[i % len(TOPICS)]} of {word} {i}."
        for i in range(start, start + n)
    ]


def units_of(text: str) -> list[str]:
    return [u.strip() for u in split_units(text)]


def shared_sentences(a: str, b: str) -> list[str]:
    """The longest run of whole sentences that ends ``a`` and starts ``b``."""
    ua, ub = units_of(a), units_of(b)
    for m in range(min(len(ua), len(ub)), 0, -1):
        if ua[-m:] == ub[:m]:
            return ub[:m]
    return []


# -- sizes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "overlap"), [(16, 4), (40, 10), (100, 25), (200, 40)])
def test_every_chunk_fits_the_size_and_counts_its_tokens(embedder, size, overlap):
    paragraphs = [" ".join(sentences(7, start=7 * p)) for p in range(9)]
    text = "\n\n".join(paragraphs)
    chunks = chunk(embedder, [Section(text)], size, overlap)

    assert len(chunks) > 1
    for c in chunks:
        measured = tokens(embedder, c.text)
        assert measured <= size, (measured, c.text)
        assert c.token_count == measured
    # Nothing is lost: every sentence is in some chunk.
    joined = "\n".join(c.text for c in chunks)
    for s in sentences(63):
        assert s in joined


# -- overlap -------------------------------------------------------------------------------------
def test_consecutive_chunks_repeat_the_tail_within_the_overlap_budget(embedder):
    size, overlap = 60, 25
    text = " ".join(sentences(40))
    chunks = chunk(embedder, [Section(text)], size, overlap)
    assert len(chunks) >= 5

    for a, b in zip(chunks, chunks[1:]):
        shared = shared_sentences(a.text, b.text)
        assert shared, f"no overlap between\n{a.text!r}\nand\n{b.text!r}"
        assert b.text.startswith(" ".join(shared))
        assert a.text.endswith(" ".join(shared))
        assert tokens(embedder, " ".join(shared)) <= overlap
        # As much of the tail as the budget allows: one more sentence would not fit.
        tail = units_of(a.text)
        if len(shared) < len(tail):
            longer = " ".join(tail[-(len(shared) + 1):])
            assert tokens(embedder, longer) > overlap
        # The chunk moves forward: it holds something the previous one did not.
        assert units_of(b.text)[-1] not in units_of(a.text)


def test_zero_overlap_repeats_nothing(embedder):
    chunks = chunk(embedder, [Section(" ".join(sentences(30)))], size=50, overlap=0)
    assert len(chunks) > 2
    all_units = [u for c in chunks for u in units_of(c.text)]
    assert len(all_units) == len(set(all_units)) == 30


# -- sentence boundaries -------------------------------------------------------------------------
def test_chunks_end_on_sentence_boundaries(embedder):
    source = sentences(50)
    text = "\n\n".join(" ".join(source[i : i + 5]) for i in range(0, 50, 5))
    chunks = chunk(embedder, [Section(text)], size=45, overlap=10)
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.startswith("Sentence "), c.text
        assert c.text.endswith("."), c.text
        # Only whole sentences of the source, never a piece of one.
        for unit in units_of(c.text):
            assert unit in source, unit


def test_paragraph_breaks_survive_inside_a_chunk(embedder):
    text = "First paragraph here. It has two sentences.\n\nSecond paragraph starts. It ends."
    [only] = chunk(embedder, [Section(text)], size=100, overlap=10)
    assert only.text == text


# -- over-long sentences -------------------------------------------------------------------------
PLAIN = " ".join(f"word{i % 13} and then" for i in range(80))
LONG_WORDS = " ".join(
    ["antidisestablishmentarianism", "floccinaucinihilipilification", "supercalifragilisticexpialidocious",
     "pneumonoultramicroscopicsilicovolcanoconiosis", "hippopotomonstrosesquippedaliophobia"][i % 5]
    for i in range(60)
)


@pytest.mark.parametrize("long_sentence", [PLAIN, LONG_WORDS], ids=["plain-words", "long-words"])
@pytest.mark.parametrize("size", [16, 23, 40])
def test_an_over_long_sentence_is_cut_by_tokens(embedder, long_sentence, size):
    assert tokens(embedder, long_sentence) > 3 * size
    before, after = "It starts here.", "It ends here."
    text = f"{before} {long_sentence}. {after}"
    chunks = chunk(embedder, [Section(text)], size=size, overlap=4)

    assert len(chunks) >= 3
    for c in chunks:
        measured = tokens(embedder, c.text)
        assert measured <= size, (measured, c.text)
        assert c.token_count == measured
    # Cut between words: a word is only ever cut when it alone is longer than a chunk.
    source_words = set(text.split())
    too_long = {w for w in source_words if tokens(embedder, w) > size}
    for c in chunks:
        for word in set(c.text.split()) - source_words:
            assert any(word in w for w in too_long), (word, c.text)
    # Every word of the long sentence is in a chunk, and the short sentences stay whole.
    covered = set(" ".join(c.text for c in chunks).split())
    assert source_words - too_long <= covered
    for word in too_long:  # its pieces together still hold every character of it
        hit = [False] * len(word)
        for piece in (w for w in covered if w in word):
            at = word.find(piece)
            hit[at : at + len(piece)] = [True] * len(piece)
        assert all(hit), word
    assert chunks[0].text.startswith(before)
    assert chunks[-1].text.endswith(after)


# -- sections ------------------------------------------------------------------------------------
def test_chunks_never_cross_sections_and_keep_their_location(embedder):
    sections = [
        Section(" ".join(sentences(12, word="alpha")), page=1),
        Section(" ".join(sentences(12, word="beta")), page=2, heading="Install > Linux"),
        Section("A single short gamma line.", heading="Usage"),
        Section(" ".join(sentences(9, word="delta"))),
    ]
    markers = ["alpha", "beta", "gamma", "delta"]
    chunks = chunk(embedder, sections, size=40, overlap=10)

    seen = []
    for c in chunks:
        [home] = [i for i, s in enumerate(sections) if (s.page, s.heading) == (c.page, c.heading)]
        assert c.text in sections[home].text
        present = {m for m in markers if re.search(rf"\b{m}\b", c.text)}
        assert present == {markers[home]}, (present, c.text)
        seen.append(home)
    # Section order is kept and every section produced chunks.
    assert seen == sorted(seen)
    assert set(seen) == {0, 1, 2, 3}
    assert chunks[0].page == 1 and chunks[0].heading is None
    assert [c for c in chunks if c.heading == "Usage"][0].text == sections[2].text


def test_positions_run_from_zero_across_sections(embedder):
    sections = [Section(" ".join(sentences(10, word=w)), page=p) for p, w in enumerate("xyz", 1)]
    chunks = chunk(embedder, sections, size=30, overlap=8)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len({c.page for c in chunks}) == 3


# -- arguments and degenerate input --------------------------------------------------------------
@pytest.mark.parametrize(("size", "overlap"), [(20, 20), (20, 35)])
def test_overlap_not_below_size_is_rejected(embedder, size, overlap):
    with pytest.raises(ValueError, match="overlap"):
        chunk(embedder, [Section("Some text.")], size, overlap)


def test_empty_and_whitespace_sections_give_no_chunks(embedder):
    blank = [Section(""), Section("   \n\n \t  \n"), Section("\n\n\n", page=3)]
    assert chunk(embedder, blank, size=40, overlap=10) == []
    assert chunk(embedder, [], size=40, overlap=10) == []

    mixed = [blank[1], Section("Real text lives here.", page=2), blank[0]]
    [only] = chunk(embedder, mixed, size=40, overlap=10)
    assert only == Chunk(position=0, text="Real text lives here.", token_count=only.token_count, page=2)
    assert only.token_count == tokens(embedder, "Real text lives here.")
