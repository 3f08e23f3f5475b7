"""Search against a brute-force reference: random corpora, queries and filters.

The vocabulary is tiny, so some words are in most memories, and the search budget
is drawn small, so the per-word cap, the direct match of a narrow time range and
the fall-back after a word reads too many rows all run on corpora of a few dozen
memories. Created times are random, so they do not follow the rowids.

Whatever the corpus: a hit is always in the namespace, within the filters and a
match of a query word; when the reference finds no more than ``limit`` matches,
search returns exactly those and says it is complete; a complete result holds
``min(limit, matches)`` hits; an incomplete one holds ``limit``.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkeel.memory.backends import MemoryBackend
from agentkeel.memory.postgres_store import PostgresMemoryStore
from agentkeel.memory.sqlite_search import SearchBudget
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.memory.store import CreateMemory, SearchQuery, SearchResult

# No two share a stem (Porter in SQLite, Snowball English in PostgreSQL), none is a
# stop word. "zebra" is in no memory.
COMMON = "apple"
FREQUENT = "river"
VOCABULARY = ("stone", "cloud", "tiger", "lemon", "pixel", "amber")
QUERY_WORDS = (COMMON, FREQUENT, *VOCABULARY, "zebra")
# Tags with and without words the index knows; "river" is also a content word.
TAGS = ("red", "blue", "x-ray", "river", "日本", "!!")
BASE_TIME = 1_700_000_000.0


class SettableClock:
    """A clock whose time the test sets before each write (created times at random)."""

    def __init__(self) -> None:
        self.now = BASE_TIME

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Memory:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    at: int
    elsewhere: bool

    def content(self) -> str:
        return " ".join(self.words)


def _memory(draw: st.DrawFn) -> Memory:
    words = list(draw(st.lists(st.sampled_from(VOCABULARY), max_size=4)))
    if draw(st.integers(0, 9)) < 8:
        words.append(COMMON)
    if draw(st.booleans()):
        words.append(FREQUENT)
    if not words:
        words.append("filler")
    return Memory(
        words=tuple(draw(st.permutations(words))),
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))),
        at=draw(st.integers(0, 100)),
        elsewhere=draw(st.integers(0, 9)) == 0,
    )


memories = st.lists(st.composite(_memory)(), min_size=1, max_size=40)
queries = st.fixed_dictionaries(
    {
        "words": st.lists(st.sampled_from(QUERY_WORDS), min_size=1, max_size=3),
        "tags": st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
        "since": st.none() | st.integers(0, 100),
        "until": st.none() | st.integers(0, 100),
        "limit": st.integers(1, 8),
    }
)
# Either the time range is always listed whole (so a word that reads too many rows
# falls back to the direct match), or a word never reads too many: the reference's
# guarantee holds either way.
budgets = st.one_of(
    st.builds(
        SearchBudget,
        word_cap=st.integers(1, 4),
        scan_rows=st.integers(1, 6),
        exact_rows=st.sampled_from([0, 2, 5, 1000]),
        filter_rows=st.just(1000),
    ),
    st.builds(
        SearchBudget,
        word_cap=st.integers(1, 4),
        scan_rows=st.just(1000),
        exact_rows=st.sampled_from([0, 2]),
        filter_rows=st.integers(0, 6),
    ),
)


def reference(corpus: list[Memory], query: SearchQuery) -> set[int]:
    """Indexes of the memories a search must consider matches: in the namespace, with
    every tag asked for, inside the time range, holding a query word in the content
    or among the words of a tag."""
    words = set((query.text or "").split())
    out = set()
    for index, memory in enumerate(corpus):
        created = BASE_TIME + memory.at
        tag_words = {part for tag in memory.tags for part in tag.replace("-", " ").split()}
        if (
            not memory.elsewhere
            and all(tag in memory.tags for tag in query.tags)
            and (query.since is None or created >= query.since)
            and (query.until is None or created <= query.until)
            and words & (set(memory.words) | tag_words)
        ):
            out.add(index)
    return out


async def load(
    store: MemoryBackend, clock: SettableClock, corpus: list[Memory], namespace: str
) -> dict[str, int]:
    """Write the corpus one memory at a time at its own created time; memory id -> index."""
    ids: dict[str, int] = {}
    for index, memory in enumerate(corpus):
        clock.now = BASE_TIME + memory.at
        result = await store.write(
            [
                CreateMemory(
                    namespace=f"{namespace}-other" if memory.elsewhere else namespace,
                    content=memory.content(),
                    tags=memory.tags,
                )
            ]
        )
        ids[result.items[0].memory_id] = index
    return ids


def check(
    result: SearchResult,
    corpus: list[Memory],
    ids: dict[str, int],
    query: SearchQuery,
) -> None:
    expected = reference(corpus, query)
    found = [ids[hit.memory.id] for hit in result.hits]
    assert len(found) == len(set(found)), "a memory came back twice"
    assert set(found) <= expected, "a hit outside the namespace, the filters or the words"
    scores = [hit.score for hit in result.hits]
    assert all(score is not None for score in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    if len(expected) <= query.limit:
        assert result.complete
        assert set(found) == expected
    if result.complete:
        assert len(found) == min(query.limit, len(expected))
    else:
        assert len(found) == query.limit


def search_query(namespace: str, drawn: dict[str, object]) -> SearchQuery:
    since, until = drawn["since"], drawn["until"]
    return SearchQuery(
        namespace=namespace,
        text=" ".join(drawn["words"]),  # type: ignore[arg-type]
        tags=list(drawn["tags"]),  # type: ignore[call-overload]
        since=None if since is None else BASE_TIME + since,  # type: ignore[operator]
        until=None if until is None else BASE_TIME + until,  # type: ignore[operator]
        limit=drawn["limit"],  # type: ignore[arg-type]
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corpus=memories, drawn=queries, budget=budgets)
async def test_sqlite_search_equals_the_reference(
    corpus: list[Memory], drawn: dict[str, object], budget: SearchBudget, tmp_path: Path
) -> None:
    """On SQLite, with small search budgets, every search keeps the reference's
    promises: nothing outside the filters, every match when they are few, and an
    honest ``complete`` flag."""
    # One directory per hypothesis example (tmp_path is shared by all of them).
    directory = Path(tempfile.mkdtemp(dir=tmp_path, prefix="run-"))
    clock = SettableClock()
    store = SqliteMemoryStore(path=directory / "m.db", clock=clock, search_budget=budget)
    await store.open()
    try:
        ids = await load(store, clock, corpus, "agent:ref")
        query = search_query("agent:ref", drawn)
        check(await store.search(query), corpus, ids, query)
    finally:
        await store.aclose()


@pytest.mark.postgres
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corpus=memories, drawn=queries)
async def test_postgres_search_equals_the_reference(
    corpus: list[Memory], drawn: dict[str, object], postgres_schema_url: str
) -> None:
    """On PostgreSQL, the same promises; each example writes to a namespace of its own."""
    clock = SettableClock()
    store = PostgresMemoryStore(url=postgres_schema_url, pool_size=2, clock=clock)
    await store.open()
    try:
        namespace = f"agent:ref-{uuid.uuid4().hex[:8]}"
        ids = await load(store, clock, corpus, namespace)
        query = search_query(namespace, drawn)
        check(await store.search(query), corpus, ids, query)
    finally:
        await store.aclose()
