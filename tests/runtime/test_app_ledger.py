"""The replica's budget ledger at start and at stop: the start says where budgets are
counted, and a stop lets the turns it cancels settle their reservations before the
ledger closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.models.types import ModelRequest, ModelResponse, TokenCallback
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import SqliteSessionStore


class Hanging:
    """A model backend whose calls never answer: a turn stays in its model call."""

    context_window = 8192

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("never answers")


class SlowSettle(SqliteSessionStore):
    """A SQLite store whose settle takes a network round trip's time, as Redis or
    PostgreSQL would; it records each settle once it is written."""

    settled: list[tuple[tuple[str, ...], int, int]]

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
        await asyncio.sleep(0.05)
        await super().settle(keys, reserved, used)
        self.settled.append((tuple(keys), reserved, used))


def settings_for(tmp_path: Path, **overrides: Any) -> Any:
    return load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "data_dir": str(tmp_path),
            "models": [{"name": "scripted", "kind": "scripted"}],
            "agent": {"tools": []},
            "guardrails": {"session_token_budget": 10_000},
            **overrides,
        },
    ).settings


async def test_a_stop_waits_for_cancelled_turns_to_settle_their_reservations(
    tmp_path: Path,
) -> None:
    """A turn still in its model call when the drain timeout runs out is cancelled; the
    lifespan returns only once that turn has unwound and settled (0 tokens, nothing
    streamed) its reservation, so no reservation is left held in a closing ledger."""
    store = SlowSettle(path=tmp_path / "sessions.db")
    store.settled = []
    await store.open()
    backend = Hanging()
    settings = settings_for(tmp_path, server={"drain_timeout_s": 0})
    app = create_app(
        settings,
        gateway=backend,
        store=store,
        clock=ManualClock(),
        registry=CollectorRegistry(),
        run_sweeper=False,
    )
    try:
        async with app.router.lifespan_context(app):
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://agent"
            )
            created = await client.post("/v1/sessions", json={"user_id": "ana"})
            session_id = created.json()["session_id"]
            turn = asyncio.create_task(
                client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"})
            )
            await asyncio.wait_for(backend.entered.wait(), timeout=5)
            tasks = set(app.state.turn_tasks)
            assert len(tasks) == 1
        assert all(task.done() for task in tasks)
        assert [(keys, used) for keys, _, used in store.settled] == [
            ((f"session:{session_id}", "user:ana:2023-11-14"), 0)
        ]
        turn.cancel()
        await asyncio.gather(turn, return_exceptions=True)
        await client.aclose()
    finally:
        await store.aclose()


async def ledger_lines_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, **overrides: Any
) -> list[str]:
    """Start and stop an app on a SQLite store in ``tmp_path``; the start's lines that say
    where the budgets are counted."""
    store = SqliteSessionStore(path=tmp_path / "sessions.db")
    await store.open()
    app = create_app(
        settings_for(tmp_path, **overrides),
        gateway=Hanging(),
        store=store,
        clock=ManualClock(),
        registry=CollectorRegistry(),
        run_sweeper=False,
    )
    try:
        with caplog.at_level(logging.INFO, logger="agentkeel.runtime"):
            async with app.router.lifespan_context(app):
                pass
    finally:
        await store.aclose()
    return [r.getMessage() for r in caplog.records if "token budgets and quotas" in r.getMessage()]


async def test_the_start_says_which_ledger_counts_the_budgets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With quotas.ledger: auto and no redis_url the budgets are counted in the session
    store, and the start says so, naming the store."""
    store_path = tmp_path / "sessions.db"
    lines = await ledger_lines_at_start(tmp_path, caplog)
    assert lines == [
        f"token budgets and quotas are counted in the SQLite session store {store_path} "
        "(quotas.ledger: auto, no redis_url)"
    ]


@pytest.mark.redis
async def test_auto_with_a_redis_url_counts_the_budgets_in_redis_and_says_so(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """redis_url set for rate limits moves budgets to Redis under quotas.ledger: auto; the
    start names Redis, why, and what a Redis outage does to model calls."""
    [line] = await ledger_lines_at_start(tmp_path, caplog, redis_url=redis_url)
    assert line.startswith("token budgets and quotas are counted in Redis budget ledger redis://")
    assert "(quotas.ledger: auto with redis_url set)" in line
    assert "model calls fail with 503 ledger_unavailable" in line
