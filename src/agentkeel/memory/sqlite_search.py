"""Ranked full-text search for the SQLite memory store, fast at a million memories.

FTS5's own ``bm25()`` reads the whole posting list of every query word to count
the documents holding it, on every query: a common word costs tens of
milliseconds at a million memories, whatever the namespace. This module keeps
FTS5 for matching and ranks itself, with BM25 over the words present:

1. one FTS5 lookup per query word, ANDed with the namespace's own token
   (``ns_key``), yields the candidates in that namespace only. A common word
   (in more than ``COMMON_FRACTION`` of all memories) yields only its first
   ``COMMON_CAP`` matches in rowid order (FTS5 reads forward; backward costs
   three times as much): it weighs little in the score, and reading all of
   its matches (most of a namespace) is what made such queries slow. Later
   candidates found through the other words still count it when their text
   holds it;
2. each word's document frequency comes from a cache (kept ten minutes); a
   word is counted up to ``DF_SAMPLE`` matches, and a word past that (a common
   one: counting all of it costs up to 70 ms) gets an estimate from how far
   into the rowids its first ``DF_SAMPLE`` matches reach. The row count and
   average length come from FTS5's own averages record, and each candidate's
   length from its docsize row;
3. the filters (exact namespace, tags, time) apply to the candidates, read by
   rowid (not through the namespace index, which would visit every memory of
   the namespace), and the best ``limit`` are read in full.

Term frequency counts exact repeats of the query word; a stemmed form that FTS5
matched ("mornings" for "morning") counts once. Otherwise this is the BM25 that
FTS5 computes (k1 = 1.2, b = 0.75), with the same statistics.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from agentkeel.memory import planner
from agentkeel.memory.store import MemoryRecord, SearchHit, SearchQuery
from agentkeel.resilience.clock import Clock

__all__ = [
    "COMMON_CAP",
    "COMMON_FRACTION",
    "DF_SAMPLE",
    "TermStats",
    "filters",
    "namespace_key",
    "ranked_search",
]

K1 = 1.2
B = 0.75
DF_TTL_S = 600.0
DF_SAMPLE = 10_000
COMMON_FRACTION = 0.05
COMMON_CAP = 100
MAX_CACHED_TERMS = 20_000
# Columns of memories_fts: content, tags, ns_key. Only the first two are text.
_TEXT_COLUMNS = 2
_WORD = re.compile(r"\w+", re.UNICODE)


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
    columns: str,
    to_record: Callable[[Sequence[Any]], MemoryRecord],
) -> list[SearchHit]:
    """The best ``query.limit`` memories for ``query.text`` in ``query.namespace``.

    ``columns`` selects a memory's fields from ``memories AS m``; ``to_record``
    turns such a row into a ``MemoryRecord``.
    """
    terms = planner.query_terms(query.text)
    key = namespace_key(query.namespace)
    total, average = _corpus_size(conn)
    frequencies = {term: stats.document_frequency(conn, term) for term in terms}
    weights = {
        term: math.log(1.0 + (total - df + 0.5) / (df + 0.5)) for term, df in frequencies.items()
    }
    present: dict[int, list[str]] = {}
    # A common word whose matches stopped at COMMON_CAP: (word, the last rowid read).
    capped: list[tuple[str, int]] = []
    for term in terms:
        common = frequencies[term] > total * COMMON_FRACTION
        rows = conn.execute(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?",
            (
                f'ns_key : "{key}" AND {{content tags}} : {_phrase(term)}',
                COMMON_CAP if common else -1,
            ),
        ).fetchall()
        for (rowid,) in rows:
            present.setdefault(rowid, []).append(term)
        if common and len(rows) >= COMMON_CAP:
            capped.append((term, rows[-1][0]))
    if not present:
        return []
    where, params = filters(query)
    # NOT INDEXED: each candidate by its rowid, rather than the whole namespace
    # through its index and then the candidate list.
    candidates = conn.execute(
        "SELECT m.rowid, (SELECT d.sz FROM memories_fts_docsize AS d WHERE d.id = m.rowid), "
        "m.content, m.tags FROM memories AS m NOT INDEXED "
        f"WHERE m.rowid IN (SELECT value FROM json_each(?)) AND {' AND '.join(where)}",
        (json.dumps(list(present)), *params),
    ).fetchall()
    scored: list[tuple[float, int]] = []
    for rowid, size, content, tags in candidates:
        if size is None:
            continue
        norm = K1 * (1.0 - B + B * _text_length(size) / max(average, 1e-9))
        text = f"{content} {tags}".lower()
        words: list[str] | None = None
        matched = present[rowid]
        for term, last in capped:
            # Past the common word's capped matches: whether it holds the word is
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
        return []
    rows = conn.execute(
        f"SELECT m.rowid, {columns} FROM memories AS m "
        "WHERE m.rowid IN (SELECT value FROM json_each(?))",
        (json.dumps([rowid for _, rowid in best]),),
    ).fetchall()
    by_rowid = {row[0]: row[1:] for row in rows}
    return [
        SearchHit(memory=to_record(by_rowid[rowid]), score=score)
        for score, rowid in best
        if rowid in by_rowid
    ]


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
