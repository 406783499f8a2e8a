"""Word-level helpers shared by lexical search and citation attribution."""

from __future__ import annotations

import re

WORD = re.compile(r"\w+")
# A word as SQLite FTS5's unicode61 tokenizer cuts it: a run of letters and digits.
_TOKEN = re.compile(r"[^\W_]+")
# Lone surrogates: what invalid UTF-8 becomes in Python through the "surrogateescape" error
# handler (command-line arguments, stdin in the C locale). No tokenizer, database or
# browser takes them.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Common English function words: they match nearly every chunk, so a lexical query or an
# attribution that counts them is slow and says little.
STOPWORDS = frozenset(
    "a an and are as at be but by for from had has have he her his i if in into is it its "
    "of on or our she so than that the their them then there these they this those to was "
    "we were what when where which who why will with would you your also been can did do "
    "does how not only other more most some such all any".split()
)


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, as a UTF-8 decoder replaces an
    invalid byte."""
    return _SURROGATE.sub("\ufffd", text)


def content_words(text: str, min_len: int = 1) -> list[str]:
    """Lower-cased words of ``text`` that are not stopwords, in order."""
    return [
        w for w in WORD.findall(text.lower()) if w not in STOPWORDS and len(w) >= min_len
    ]


def same_text(a: str, b: str) -> bool:
    """The same answer, up to whitespace (two versions that wrote the same words tie)."""
    return a.split() == b.split()


def search_word_count(text: str) -> int:
    """The words in ``text`` as a full-text engine counts them (runs of letters and digits,
    stopwords included, as FTS5's tokenizer cuts them): the document length of BM25."""
    return len(_TOKEN.findall(text))


def word_count(text: str) -> int:
    return len(text.split())


def repeated_ngrams(text: str, n: int = 3) -> tuple[int, int]:
    """(repeated, total) word ``n``-grams of ``text``: an n-gram is repeated when it already
    occurred earlier in the same text (case-insensitive, punctuation ignored)."""
    words = WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) - len(set(grams)), len(grams)


def repeated_ngram_rate(texts: list[str], n: int = 3) -> float:
    """Share of repeated word n-grams among all word n-grams of ``texts`` (pooled): 0 for
    text that never repeats itself, near 1 for "No, no, no, no, ..."."""
    counts = [repeated_ngrams(t, n) for t in texts]
    total = sum(c[1] for c in counts)
    return sum(c[0] for c in counts) / total if total else 0.0
