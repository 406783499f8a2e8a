"""Lexical (full-text) search over chunk text, one implementation per database dialect.

The database's own full-text engine does the matching; both rank by the same BM25, because
reciprocal-rank fusion (``assistant.documents.retrieval``) reads the whole order of the lexical
candidates, not only the first: a database that orders them differently gives different
hybrid results.

* SQLite: an FTS5 table kept in step by triggers (migration 0002), ranked by ``bm25()``.
* PostgreSQL: a generated ``tsvector`` column with a GIN index (migrations 0006, 0011),
  ranked by BM25 computed as FTS5 computes it, from the stored term counts and each chunk's
  word count (``ts_rank_cd`` has no inverse document frequency, and hybrid search lost 16
  points of hit@1 with it).

Both stem English words (Porter / Snowball), index every word, and match any word of the
query but the product's stopwords (``assistant.words``); the query's words are passed as
quoted terms, so that search syntax typed by a user is never interpreted. A database with
neither engine is refused when it is opened (:func:`lexical_for`), rather than lexical
search quietly finding nothing.

Each also checks its own full-text index for ``assistant doctor`` (``check``: the FTS5 table
against the chunks, rebuilt on repair; the PostgreSQL column and index are there).

A new dialect is one class here with ``search`` and ``check``, and its entry in ``_BY_DIALECT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from assistant.errors import AssistantError, DatabaseLocked, UnsupportedDatabase
from assistant.storage.health import OK, PROBLEM, REPAIRED, CheckResult, reason, result
from assistant.words import WORD, content_words

if TYPE_CHECKING:
    from assistant.storage.db import Database


def query_words(query: str) -> list[str]:
    """The words a lexical search looks for: those of ``query`` but stopwords (all of them
    when it has nothing else), lower-cased, each once."""
    return list(dict.fromkeys(content_words(query) or WORD.findall(query.lower())))


class LexicalSearch(Protocol):
    #: Shown by ``assistant doctor``.
    name: str

    def search(self, session: Session, query: str, limit: int,
               document_ids: Sequence[int] | None) -> list[tuple[int, float]]:
        """[(chunk id, score)], best first, higher is better."""

    def check(self, db: Database, repair: bool) -> CheckResult:
        """Whether the full-text index agrees with the chunks (``assistant doctor``); with
        ``repair``, rebuild it where it can be."""


def fts_query(query: str) -> str | None:
    """User text -> an FTS5 query matching any of its words but stopwords (each quoted,
    so that FTS syntax in the text is never interpreted)."""
    return " OR ".join(f'"{w}"' for w in query_words(query)) or None


class SqliteFts5:
    name = "SQLite FTS5 (bm25)"

    def search(self, session: Session, query: str, limit: int,
               document_ids: Sequence[int] | None) -> list[tuple[int, float]]:
        match = fts_query(query)
        if match is None:
            return []
        sql = (
            "SELECT f.rowid, bm25(chunks_fts) AS score FROM chunks_fts f "
            + ("JOIN chunks c ON c.id = f.rowid " if document_ids is not None else "")
            + "WHERE chunks_fts MATCH :q "
            + (
                f"AND c.document_id IN ({','.join(str(int(i)) for i in document_ids) or 'NULL'}) "
                if document_ids is not None
                else ""
            )
            + "ORDER BY score LIMIT :k"
        )
        rows = session.execute(text(sql), {"q": match, "k": limit}).all()
        # bm25() is lower-is-better; flip it so that higher is better everywhere.
        return [(int(r[0]), -float(r[1])) for r in rows]

    def check(self, db: Database, repair: bool) -> CheckResult:
        """The FTS5 table is kept in step by triggers: FTS5's own integrity check compares it
        with the chunks, and a rebuild makes it again from the chunk text."""
        try:
            with db.write() as s:
                s.execute(text("INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)"))
            return result(OK, "full-text index agrees with the chunks")
        except DatabaseLocked as err:
            return result(PROBLEM, f"could not check the full-text index: {err}")
        except (AssistantError, DBAPIError) as err:
            why = reason(err)
        if not repair:
            return result(PROBLEM, f"the full-text index disagrees with the chunks ({why}); "
                          "`assistant doctor --repair` rebuilds it from the chunk text")
        with db.write() as s:
            s.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')"))
        return result(REPAIRED, "the full-text index disagreed with the chunks; rebuilt it "
                      "from the chunk text")


def tsquery(query: str) -> str | None:
    """User text -> a ``to_tsquery`` expression: any of its words, each a quoted term."""
    return " | ".join(f"'{w}'" for w in query_words(query)) or None


class PostgresFullText:
    name = "PostgreSQL full-text search (tsvector, GIN index, BM25 as FTS5 computes it)"
    #: The text search configuration of the generated column (migration 0011: English
    #: stemming without stopwords): the same one must parse the query, or stemmed words
    #: would not meet.
    config = "assistant_english"
    #: BM25's constants, as FTS5's bm25() has them.
    k1, b = 1.2, 0.75

    def search(self, session: Session, query: str, limit: int,
               document_ids: Sequence[int] | None) -> list[tuple[int, float]]:
        """BM25 as SQLite's FTS5 computes it, so that both databases rank alike:

        * term frequency: the lexeme's positions in the stored ``tsvector``;
        * IDF: ``ln((N - n + 0.5) / (n + 0.5))``, at least 1e-6 (a word in more than half of
          the chunks weighs next to nothing), N the chunks, n those with the word (every chunk
          that holds a query word matches, so the counts come exact from the matches);
        * document length: the chunk's words, stopwords included (``chunks.word_count``),
          over the average of all chunks.

        PostgreSQL's own ``ts_rank_cd`` has no IDF (hybrid hit@1 on the SQuAD benchmark fell
        from 0.795 to 0.638 with it); a length in distinct lexemes, a smoothed IDF and the
        ``english`` stopword list each moved the ranking away from FTS5's (0.758)."""
        terms = tsquery(query)
        if terms is None:
            return []
        sql = f"""
            WITH q AS (SELECT to_tsquery('{self.config}', :q) AS tsq,
                              tsvector_to_array(to_tsvector('{self.config}', :words)) AS lexemes),
            m AS (
                SELECT c.id, c.document_id, u.lexeme, array_length(u.positions, 1) AS tf,
                       c.word_count AS dl
                FROM q, chunks c CROSS JOIN LATERAL unnest(c.text_search) u
                WHERE c.text_search @@ q.tsq AND u.lexeme = ANY(q.lexemes)
            ),
            df AS (SELECT lexeme, count(*) AS n FROM m GROUP BY lexeme),
            total AS (SELECT count(*) AS n, avg(word_count) AS avgdl FROM chunks)
            SELECT m.id, sum(
                greatest(ln((total.n - df.n + 0.5) / (df.n + 0.5)), 1e-6)
                * m.tf * ({self.k1} + 1)
                / (m.tf + {self.k1} * (1 - {self.b} + {self.b} * m.dl / greatest(total.avgdl, 1)))
            ) AS score
            FROM m JOIN df USING (lexeme), total
            {"WHERE m.document_id = ANY(:ids)" if document_ids is not None else ""}
            GROUP BY m.id ORDER BY score DESC, m.id LIMIT :k
        """
        params = {"q": terms, "words": " ".join(query_words(query)), "k": limit}
        if document_ids is not None:
            params["ids"] = [int(i) for i in document_ids]
        rows = session.execute(text(sql), params).all()
        return [(int(r[0]), float(r[1])) for r in rows]

    def check(self, db: Database, repair: bool) -> CheckResult:
        """A generated column cannot disagree with its text; what can go wrong is that it or
        its index is missing (a schema made by hand, or restored without it), which only a
        migration mends (nothing to repair here)."""
        try:
            with db.read() as s:
                problem = self._missing(s)
        except (AssistantError, DBAPIError) as err:
            problem = f"could not check it: {reason(err)}"
        return result(PROBLEM, problem) if problem else result(OK, f"full-text search: {self.name}")

    @staticmethod
    def _missing(session: Session) -> str | None:
        found = set(session.scalars(text(
            "SELECT 'column' FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'chunks' AND column_name = 'text_search' "
            "UNION ALL SELECT 'index' FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = 'chunks' AND indexname = 'ix_chunks_text_search'")))
        missing = {"column", "index"} - found
        if missing:
            return (f"the chunks table has no full-text {' or '.join(sorted(missing))} "
                    "(chunks.text_search, ix_chunks_text_search): `assistant db upgrade` from "
                    "revision 0005 creates them")
        return None


_BY_DIALECT: dict[str, type] = {"sqlite": SqliteFts5, "postgresql": PostgresFullText}


def lexical_for(dialect: str) -> LexicalSearch:
    """The lexical search of a database dialect; refuses one that has none."""
    try:
        return _BY_DIALECT[dialect]()
    except KeyError:
        raise UnsupportedDatabase(dialect, sorted(_BY_DIALECT)) from None
