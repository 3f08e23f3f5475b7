"""Ranked full-text search for the SQLite memory store, fast at a million memories.

FTS5's own ``bm25()`` reads the whole posting list of every query word to count
the documents holding it, on every query: a common word costs tens of
milliseconds at a million memories, whatever the namespace. This module keeps
FTS5 for matching and ranks itself, with BM25 over the words present.

Finding the candidates: every memory of the namespace that matches a word and
passes the filters (tags, ``since``/``until``), within a ``SearchBudget``:

1. with a time or tag filter, the rows in the namespace's time range are listed
   from the ``(namespace, created_at)`` index (at most ``filter_rows`` + 1) and,
   when there are no more than ``filter_rows``, held to the tags. When no more
   than ``exact_rows`` rows pass, those rows are matched directly: their text
   goes into a temporary FTS5 table with the same tokenizer, each word is looked
   up there, and the table is rolled back. No word's posting list is read,
   however common the word;
2. otherwise each word is looked up in the index, ANDed with the namespace's own
   token (``ns_key``) and the words of every tag, inside the rowid range of the
   rows that passed step 1 when it listed them. Its matches are read in rowid
   order (FTS5 reads forward; backward costs three times as much) and held to
   the filters, until ``word_cap`` of them pass (at least ``limit`` + 1: the
   memories matching that word and the filters then outnumber ``limit``), or
   every match was read, or ``scan_rows`` were read. A candidate found through
   another word past a capped word's last match read counts that word when its
   text holds it (exact form only), as term frequency is;
3. a word that read ``scan_rows`` matches without reaching the end or its cap
   sends the search to step 1's direct match over every row that passed the
   filters, when step 1 listed them. Only when it could not (more than
   ``filter_rows`` rows in the time range) is the search incomplete.

So the hits hold every match whenever the matches number ``limit`` or fewer,
unless the time range holds more than ``filter_rows`` rows of the namespace and
a word's matches outrun ``scan_rows`` there; ``SearchResult.complete`` says
whether every match was scored, and a hit is never outside the filters.

Ranking: each word's document frequency comes from a cache (kept ten minutes); a
word is counted up to ``DF_SAMPLE`` matches, and a word past that (a common one:
counting all of it costs up to 70 ms) gets an estimate from how far into the
rowids its first ``DF_SAMPLE`` matches reach. The row count and average length
come from FTS5's own averages record, and each candidate's length from its
docsize row. Term frequency counts exact repeats of the query word; a stemmed
form that FTS5 matched ("mornings" for "morning") counts once. Otherwise this is
the BM25 that FTS5 computes (k1 = 1.2, b = 0.75), with the same statistics.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkeel.memory import planner
from agentkeel.memory.store import MemoryRecord, SearchHit, SearchQuery, SearchResult
from agentkeel.resilience.clock import Clock

__all__ = [
    "DF_SAMPLE",
    "TOKENIZE",
    "SearchBudget",
    "TermStats",
    "filters",
    "namespace_key",
    "ranked_search",
]

K1 = 1.2
B = 0.75
DF_TTL_S = 600.0
DF_SAMPLE = 10_000
MAX_CACHED_TERMS = 20_000
TOKENIZE = "porter unicode61"
"""The tokenizer of ``memories_fts`` and of the temporary table rows are matched in."""
# Columns of memories_fts: content, tags, ns_key. Only the first two are text.
_TEXT_COLUMNS = 2
_WORD = re.compile(r"\w+", re.UNICODE)
# A tag holding an ASCII letter or digit has words FTS5 indexes; only such tags
# narrow the index lookup (every tag is checked exactly on the row anyway).
_INDEXED_TAG = re.compile(r"[A-Za-z0-9]")
_SCOPE_TABLE = "search_scope"
_FIRST_ROWID = -(1 << 63) + 1


@dataclass(frozen=True, slots=True)
class SearchBudget:
    """How much one search may read, so it costs milliseconds however large a namespace.

    ``word_cap``: matches of one word (passing the filters) ranked, at least the
    query's ``limit`` + 1. ``scan_rows``: matches of one word held to the filters
    before giving up on that word. ``exact_rows``: a filtered search whose time
    range holds at most this many rows matches them directly, without the words'
    posting lists. ``filter_rows``: the most rows of a time range listed, which
    bounds the rowids a word is looked up in and the direct match a word that ran
    out of ``scan_rows`` falls back to.

    >>> SqliteMemoryStore(path=path, search_budget=SearchBudget(word_cap=2, exact_rows=0))
    """

    word_cap: int = 100
    scan_rows: int = 2000
    exact_rows: int = 256
    filter_rows: int = 2000

    def __post_init__(self) -> None:
        for name in ("word_cap", "scan_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"SearchBudget.{name} is {getattr(self, name)}; give 1 or more.")
        for name in ("exact_rows", "filter_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"SearchBudget.{name} is {getattr(self, name)}; give 0 or more.")


def namespace_key(namespace: str) -> str:
    """The search token of a namespace, as the ``ns_key`` column computes it."""
    return "ns" + namespace.encode().hex().upper()


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class TermStats:
    """Document frequencies by word, counted on first use and kept ``DF_TTL_S``.

    Exact up to ``DF_SAMPLE`` memories; beyond, ``DF_SAMPLE`` scaled by how much
    of the rowid range the first ``DF_SAMPLE`` matches cover (the ranking needs
    the order of magnitude, and a word that common weighs little anyway).
    Used on the store's one worker thread only, so it needs no lock.
    """

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._df: dict[str, tuple[int, float]] = {}

    def document_frequency(self, conn: sqlite3.Connection, term: str) -> int:
        now = self._clock.monotonic()
        cached = self._df.get(term)
        if cached is not None and now - cached[1] < DF_TTL_S:
            return cached[0]
        count, reached = conn.execute(
            "SELECT count(*), max(rowid) FROM (SELECT rowid FROM memories_fts "
            "WHERE memories_fts MATCH ? ORDER BY rowid LIMIT ?)",
            (f"{{content tags}} : {_phrase(term)}", DF_SAMPLE),
        ).fetchone()
        frequency = int(count)
        if frequency >= DF_SAMPLE and reached:
            last = conn.execute("SELECT max(rowid) FROM memories").fetchone()[0] or reached
            frequency = max(frequency, round(frequency * int(last) / int(reached)))
        if len(self._df) >= MAX_CACHED_TERMS:
            self._df.clear()
        self._df[term] = (frequency, now)
        return frequency


def _varints(blob: bytes) -> list[int]:
    """SQLite's varints (big-endian, 7 bits a byte, the 9th byte whole), as FTS5
    stores its averages and docsize records."""
    values: list[int] = []
    index = 0
    while index < len(blob):
        value = 0
        for position in range(9):
            byte = blob[index]
            index += 1
            if position == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        values.append(value)
    return values


def _text_length(size: bytes) -> int:
    """Tokens in the text columns, from a docsize record (one byte each, mostly)."""
    if len(size) > _TEXT_COLUMNS and size[0] < 0x80 and size[1] < 0x80:
        return size[0] + size[1]
    return sum(_varints(bytes(size))[:_TEXT_COLUMNS])


def _corpus_size(conn: sqlite3.Connection) -> tuple[int, float]:
    """(memories, average text tokens per memory) from FTS5's averages record."""
    row = conn.execute("SELECT block FROM memories_fts_data WHERE id = 1").fetchone()
    if row is not None and row[0]:
        values = _varints(bytes(row[0]))
        if len(values) > _TEXT_COLUMNS and values[0] > 0:
            return values[0], sum(values[1 : 1 + _TEXT_COLUMNS]) / values[0]
    count = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
    return count, 10.0


def ranked_search(
    conn: sqlite3.Connection,
    query: SearchQuery,
    *,
    stats: TermStats,
    budget: SearchBudget,
    columns: str,
    to_record: Callable[[Sequence[Any]], MemoryRecord],
) -> SearchResult:
    """The best ``query.limit`` memories for ``query.text`` in ``query.namespace``.

    ``columns`` selects a memory's fields from ``memories AS m``; ``to_record``
    turns such a row into a ``MemoryRecord``.
    """
    terms = planner.query_terms(query.text)
    total, average = _corpus_size(conn)
    frequencies = {term: stats.document_frequency(conn, term) for term in terms}
    weights = {
        term: math.log(1.0 + (total - df + 0.5) / (df + 0.5)) for term, df in frequencies.items()
    }
    found = _candidates(conn, query, terms, budget)
    if not found.present:
        return SearchResult(hits=(), complete=found.complete)
    where, params = filters(query)
    # NOT INDEXED: each candidate by its rowid, rather than the whole namespace
    # through its index and then the candidate list.
    candidates = conn.execute(
        "SELECT m.rowid, (SELECT d.sz FROM memories_fts_docsize AS d WHERE d.id = m.rowid), "
        "m.content, m.tags FROM memories AS m NOT INDEXED "
        f"WHERE m.rowid IN (SELECT value FROM json_each(?)) AND {' AND '.join(where)}",
        (json.dumps(list(found.present)), *params),
    ).fetchall()
    scored: list[tuple[float, int]] = []
    for rowid, size, content, tags in candidates:
        if size is None:
            continue
        norm = K1 * (1.0 - B + B * _text_length(size) / max(average, 1e-9))
        text = f"{content} {tags}".lower()
        words: list[str] | None = None
        matched = found.present[rowid]
        for term, last in found.capped:
            # Past the capped word's last match read: whether it holds the word is
            # read from the text (exact form only), as term frequency is.
            if rowid > last and term not in matched and term in text:
                words = words if words is not None else _WORD.findall(text)
                if term in words:
                    matched = [*matched, term]
        score = 0.0
        for term in matched:
            # Exact repeats count; a stemmed form FTS5 matched counts once. Most
            # memories hold a word once, which a substring count shows cheaply.
            frequency = 1
            if text.count(term) > 1:
                words = words if words is not None else _WORD.findall(text)
                frequency = max(1, words.count(term))
            score += weights[term] * frequency * (K1 + 1.0) / (frequency + norm)
        scored.append((score, rowid))
    scored.sort(key=lambda item: (-item[0], item[1]))
    best = scored[: query.limit]
    if not best:
        return SearchResult(hits=(), complete=found.complete)
    rows = conn.execute(
        f"SELECT m.rowid, {columns} FROM memories AS m "
        "WHERE m.rowid IN (SELECT value FROM json_each(?))",
        (json.dumps([rowid for _, rowid in best]),),
    ).fetchall()
    by_rowid = {row[0]: row[1:] for row in rows}
    hits = tuple(
        SearchHit(memory=to_record(by_rowid[rowid]), score=score)
        for score, rowid in best
        if rowid in by_rowid
    )
    return SearchResult(hits=hits, complete=found.complete)


@dataclass(slots=True)
class _Candidates:
    """Rowids with the query words each matched; the words whose matches were read
    only up to a rowid (word, that rowid); whether every match was read."""

    present: dict[int, list[str]] = field(default_factory=dict)
    capped: list[tuple[str, int]] = field(default_factory=list)
    complete: bool = True


def _candidates(
    conn: sqlite3.Connection, query: SearchQuery, terms: Sequence[str], budget: SearchBudget
) -> _Candidates:
    scope: list[int] | None = None
    if query.tags or query.since is not None or query.until is not None:
        listed = _time_range_rows(conn, query, budget.filter_rows + 1)
        if len(listed) <= budget.filter_rows:
            scope = _passing(conn, query, listed)
            if len(scope) <= budget.exact_rows:
                return _Candidates(present=_match_rows(conn, query, terms, scope))
    rowids = (scope[0], scope[-1]) if scope else None
    found = _Candidates()
    cap = max(budget.word_cap, query.limit + 1)
    for term in terms:
        matches, last, outcome = _word_matches(
            conn, query, term, cap=cap, scan_rows=budget.scan_rows, rowids=rowids
        )
        if outcome == "scan_rows" and scope is not None:
            return _Candidates(present=_match_rows(conn, query, terms, scope))
        for rowid in matches:
            found.present.setdefault(rowid, []).append(term)
        if outcome != "all":
            found.capped.append((term, last))
            found.complete = False
    return found


def _passing(conn: sqlite3.Connection, query: SearchQuery, rowids: Sequence[int]) -> list[int]:
    """Which of ``rowids`` pass every filter, in rowid order."""
    where, params = filters(query)
    rows = conn.execute(
        "SELECT m.rowid FROM memories AS m NOT INDEXED "
        f"WHERE m.rowid IN (SELECT value FROM json_each(?)) AND {' AND '.join(where)} "
        "ORDER BY m.rowid",
        (json.dumps(list(rowids)), *params),
    ).fetchall()
    return [row[0] for row in rows]


def _time_range_rows(conn: sqlite3.Connection, query: SearchQuery, most: int) -> list[int]:
    """Rowids of the namespace within ``since``/``until`` (tags unchecked), from the
    ``(namespace, created_at)`` index alone; at most ``most``."""
    where = ["namespace = ?"]
    params: list[Any] = [query.namespace]
    if query.since is not None:
        where.append("created_at >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("created_at <= ?")
        params.append(query.until)
    rows = conn.execute(
        f"SELECT rowid FROM memories WHERE {' AND '.join(where)} LIMIT ?", (*params, most)
    ).fetchall()
    return [row[0] for row in rows]


def _match_rows(
    conn: sqlite3.Connection, query: SearchQuery, terms: Sequence[str], rowids: Sequence[int]
) -> dict[int, list[str]]:
    """Which of ``rowids`` (rows that pass the filters) match each word, by FTS5's own
    rules: their text is indexed in a temporary table with the same tokenizer,
    searched, and rolled back."""
    if not rowids or not terms:
        return {}
    rows = conn.execute(
        "SELECT m.rowid, m.content, m.tags FROM memories AS m NOT INDEXED "
        "WHERE m.rowid IN (SELECT value FROM json_each(?)) AND m.namespace = ?",
        (json.dumps(list(rowids)), query.namespace),
    ).fetchall()
    if not rows:
        return {}
    _create_scope_table(conn)
    present: dict[int, list[str]] = {}
    conn.execute("SAVEPOINT search_scope")
    try:
        conn.executemany(
            f"INSERT INTO temp.{_SCOPE_TABLE} (rowid, content, tags) VALUES (?, ?, ?)", rows
        )
        for term in terms:
            for (rowid,) in conn.execute(
                f"SELECT rowid FROM temp.{_SCOPE_TABLE} WHERE {_SCOPE_TABLE} MATCH ?",
                (f"{{content tags}} : {_phrase(term)}",),
            ):
                present.setdefault(rowid, []).append(term)
    finally:
        conn.execute("ROLLBACK TO search_scope")
        conn.execute("RELEASE search_scope")
    return present


def _create_scope_table(conn: sqlite3.Connection) -> None:
    """The connection's temporary FTS5 table, in memory, created on first use."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_temp_master WHERE name = ?", (_SCOPE_TABLE,)
    ).fetchone()
    if exists is None:
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(
            f"CREATE VIRTUAL TABLE temp.{_SCOPE_TABLE} USING fts5 "
            f"(content, tags, content='', tokenize='{TOKENIZE}')"
        )


def _word_matches(
    conn: sqlite3.Connection,
    query: SearchQuery,
    term: str,
    *,
    cap: int,
    scan_rows: int,
    rowids: tuple[int, int] | None,
) -> tuple[list[int], int, Literal["all", "cap", "scan_rows"]]:
    """The word's matches in the namespace that pass the filters, in rowid order: up to
    ``cap`` of them, the last rowid they account for, and why the reading stopped
    (every match read, ``cap`` reached, or ``scan_rows`` read)."""
    expression = (
        f'ns_key : "{namespace_key(query.namespace)}" AND {{content tags}} : {_phrase(term)}'
    )
    for tag in query.tags:
        if _INDEXED_TAG.search(tag):
            expression += f" AND tags : {_phrase(tag)}"
    low, high = rowids if rowids is not None else (_FIRST_ROWID, None)
    upper = "" if high is None else f" AND rowid <= {int(high)}"
    if not (query.tags or query.since is not None or query.until is not None):
        found = [
            row[0]
            for row in conn.execute(
                "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? AND rowid >= ?"
                f"{upper} ORDER BY rowid LIMIT ?",
                (expression, low, cap + 1),
            )
        ]
        if len(found) > cap:
            return found[:cap], found[cap - 1], "cap"
        return found, found[-1] if found else 0, "all"
    where, params = filters(query)
    passing: list[int] = []
    after, read, page = low - 1, 0, cap
    while read < scan_rows:
        take = min(page, scan_rows - read)
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? AND rowid > ?"
                f"{upper} ORDER BY rowid LIMIT ?",
                (expression, after, take),
            )
        ]
        if not ids:
            return passing, after, "all"
        read += len(ids)
        after = ids[-1]
        passing.extend(
            row[0]
            for row in conn.execute(
                "SELECT m.rowid FROM memories AS m NOT INDEXED "
                f"WHERE m.rowid IN (SELECT value FROM json_each(?)) AND {' AND '.join(where)} "
                "ORDER BY m.rowid",
                (json.dumps(ids), *params),
            )
        )
        if len(passing) > cap:
            return passing[:cap], passing[cap - 1], "cap"
        if len(ids) < take:
            return passing, after, "all"
        page *= 2
    return passing, after, "scan_rows"


def filters(query: SearchQuery) -> tuple[list[str], list[Any]]:
    """WHERE terms (on ``memories AS m``) and their parameters for a query's namespace,
    tags and time range."""
    where = ["m.namespace = ?"]
    params: list[Any] = [query.namespace]
    for tag in query.tags:
        where.append("EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value = ?)")
        params.append(tag)
    if query.since is not None:
        where.append("m.created_at >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("m.created_at <= ?")
        params.append(query.until)
    return where, params
