"""The must-show of quotas: 50 concurrent turns of one user across two replicas (two real
agent servers, each with its own store and ledger objects) with a daily quota that only
part of them fit. Once sharing one PostgreSQL database (the store is the ledger), once
sharing Redis (``quotas.ledger: redis``; each replica then keeps sessions in a SQLite
file of its own, so Redis alone is shared). The settled usage never exceeds the quota;
the rest get 429 ``quota_exhausted`` with Retry-After (a couple of seconds for those
refused while the others still held the rest, the day's reset once the settled tokens
leave no room); no refused turn is stored.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.resilience.clock import ManualClock, SystemClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import SessionBackend, open_store
from agentkeel.runtime.stores.redis_ledger import RedisLedger
from agentkeel.telemetry.metrics import ModelMetrics

QUOTA = 3_000
TURNS = 50
USER = "mei"
# ManualClock's wall time is 2023-11-14T22:13:20Z: the user's key for that day, 6400 s
# before it resets.
DAY_KEY = f"user:{USER}:2023-11-14"


@dataclass
class Replica:
    client: httpx.AsyncClient
    store: SessionBackend
    registry: CollectorRegistry


async def start_replicas(
    stack: AsyncExitStack, store_urls: list[str], **settings_overrides: Any
) -> list[Replica]:
    replicas = []
    quotas = {"user_daily_tokens": QUOTA, **settings_overrides.pop("quotas", {})}
    for index, store_url in enumerate(store_urls):
        settings = load_settings(
            layers=[],
            overrides={
                "secrets_dir": None,
                "models": [{"name": "scripted", "kind": "scripted"}],
                "agent": {"tools": []},
                "server": {"replica_id": f"replica-{index + 1}"},
                "guardrails": {"session_token_budget": 0, "max_output_tokens": 64},
                "quotas": quotas,
                **settings_overrides,
            },
        ).settings
        registry = CollectorRegistry()
        # Real latency, so that the turns of both replicas hold their reservations together.
        provider = ScriptedProvider(script=(), clock=SystemClock(), latency_s=0.05)
        gateway = ModelGateway(
            providers=[provider],
            breakers={},
            retry=settings.retry,
            metrics=ModelMetrics(registry),
            clock=ManualClock(),
        )
        store = open_store(store_url)
        await store.open()
        stack.push_async_callback(store.aclose)
        app = create_app(
            settings, gateway=gateway, store=store, clock=ManualClock(), registry=registry
        )
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        )
        replicas.append(Replica(client, store, registry))
    return replicas


async def fifty_turns(replicas: list[Replica]) -> list[tuple[Replica, str, httpx.Response]]:
    """One session per turn, alternating replicas; all turns sent at once."""
    sessions = []
    for n in range(TURNS):
        replica = replicas[n % 2]
        created = await replica.client.post("/v1/sessions", json={"user_id": USER})
        assert created.status_code == 201, created.text
        sessions.append((replica, created.json()["session_id"]))
    responses = await asyncio.gather(
        *(
            replica.client.post(
                f"/v1/sessions/{session_id}/messages",
                json={"content": f"question {n}: what is the weather like today?"},
            )
            for n, (replica, session_id) in enumerate(sessions)
        )
    )
    return [(r, s, resp) for (r, s), resp in zip(sessions, responses, strict=True)]


async def check_outcome(results: list[tuple[Replica, str, httpx.Response]], settled: int) -> None:
    statuses = [response.status_code for _, _, response in results]
    assert set(statuses) <= {200, 429}, [r.text for _, _, r in results if r.status_code >= 500]
    served = [response for _, _, response in results if response.status_code == 200]
    refused = [response for _, _, response in results if response.status_code == 429]
    assert served and refused, f"{len(served)} served, {len(refused)} refused"
    busy = 0
    for response in refused:
        error = response.json()["error"]
        assert error["code"] == "quota_exhausted", error
        assert f"User '{USER}'" in error["message"]
        # Refused while the other turns still held the rest: a short wait; once the
        # settled tokens leave no room: until the day resets.
        if "other turns still running hold the rest" in error["message"]:
            busy += 1
            assert response.headers["retry-after"] == "2"
        else:
            assert response.headers["retry-after"] == "6400", error
    assert busy, "the turns refused while the others were in flight are told to retry soon"
    spent = sum(response.json()["usage"]["total_tokens"] for response in served)
    assert settled == spent
    assert settled <= QUOTA, f"settled {settled} tokens against a quota of {QUOTA}"
    for replica, session_id, response in results:
        stored = (await replica.client.get(f"/v1/sessions/{session_id}")).json()
        assert stored["turn_count"] == (1 if response.status_code == 200 else 0)
    # One quota for both: each replica's 25 turns alone ask for more than the quota, each
    # is refused some, and together they settle no more than it (checked above). Which
    # replica reaches the ledger first wins its tokens, so one may serve them all.
    for replica in (results[0][0], results[1][0]):
        mine = [resp.status_code for r, _, resp in results if r is replica]
        assert 429 in mine and len(mine) == TURNS // 2, mine


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


@pytest.mark.postgres
async def test_two_replicas_sharing_postgres_never_settle_past_the_quota(
    stack: AsyncExitStack, postgres_schema_url: str
) -> None:
    """Two replicas on one PostgreSQL database (the store is the ledger): 50 concurrent
    turns of one user, a quota that only part of them fit."""
    replicas = await start_replicas(
        stack, [postgres_schema_url, postgres_schema_url], quotas={"ledger": "store"}
    )
    results = await fifty_turns(replicas)
    settled = await replicas[0].store.used(DAY_KEY)
    await check_outcome(results, settled)
    top = await replicas[1].store.top_users(first_day="2023-11-14", last_day="2023-11-14", limit=5)
    assert [(u.user_id, u.totals.total_tokens) for u in top] == [(USER, settled)]


@pytest.mark.redis
async def test_two_replicas_sharing_redis_never_settle_past_the_quota(
    stack: AsyncExitStack, redis_url: str, tmp_path: Path
) -> None:
    """Two replicas whose only shared state is Redis (quotas.ledger: redis; sessions in a
    SQLite file each): 50 concurrent turns of one user, a quota that only part fit."""
    prefix = f"keeltest:{uuid.uuid4().hex[:12]}:"
    replicas = await start_replicas(
        stack,
        [f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"],
        redis_url=redis_url,
        quotas={"ledger": "redis", "redis_prefix": prefix},
    )
    ledger = RedisLedger(url=redis_url, prefix=prefix)
    await ledger.open()
    try:
        results = await fifty_turns(replicas)
        settled = await ledger.used(DAY_KEY)
        assert await replicas[0].store.used(DAY_KEY) == 0  # not in the stores
        await check_outcome(results, settled)
        recorded = 0
        for replica in replicas:
            for user in await replica.store.top_users(
                first_day="2023-11-14", last_day="2023-11-14", limit=5
            ):
                recorded += user.totals.total_tokens
        assert recorded == settled
    finally:
        await ledger.aclose()
        client = aioredis.Redis.from_url(redis_url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


@pytest.mark.redis
async def test_forgetting_a_user_removes_their_quota_keys_from_redis(
    stack: AsyncExitStack, redis_url: str, tmp_path: Path
) -> None:
    """With the ledger in Redis, POST /admin/sessions/forget removes the user's day key
    there too (counted in budget_rows); another user's stays."""
    prefix = f"keeltest:{uuid.uuid4().hex[:12]}:"
    (tmp_path / "admin_token").write_text("forget-admin-token-" + "f" * 24)
    [replica] = await start_replicas(
        stack,
        [f"sqlite:///{tmp_path / 'one.db'}"],
        redis_url=redis_url,
        quotas={"ledger": "redis", "redis_prefix": prefix},
        server={"admin_token_file": str(tmp_path / "admin_token")},
    )
    ledger = RedisLedger(url=redis_url, prefix=prefix)
    await ledger.open()
    try:
        for user in (USER, "other"):
            created = await replica.client.post("/v1/sessions", json={"user_id": user})
            session_id = created.json()["session_id"]
            turn = await replica.client.post(
                f"/v1/sessions/{session_id}/messages", json={"content": "hi"}
            )
            assert turn.status_code == 200, turn.text
        assert await ledger.used(DAY_KEY) > 0
        forgot = await replica.client.post(
            "/admin/sessions/forget",
            json={"user_id": USER},
            headers={"Authorization": "Bearer forget-admin-token-" + "f" * 24},
        )
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["budget_rows"] >= 1
        assert forgot.json()["usage_rows"] == 1
        assert await ledger.used(DAY_KEY) == 0
        assert await ledger.used("user:other:2023-11-14") > 0
    finally:
        await ledger.aclose()
        client = aioredis.Redis.from_url(redis_url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
