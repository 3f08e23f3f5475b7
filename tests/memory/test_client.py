"""``MemoryClient``: reads fail fast, writes queue in the outbox and arrive exactly once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.memory import MemoryClientSettings
from agentkeel.errors import (
    ConfigError,
    Forbidden,
    InvalidRequest,
    MemoryUnavailable,
    SecretError,
    Unavailable,
)
from agentkeel.memory.client import build_memory_client, outbox_path_for
from agentkeel.memory.metrics import MemoryClientMetrics
from agentkeel.memory.outbox import MemoryOutbox
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.correlation import set_correlation_id
from agentkeel.tools.memory_tools import MemoryBackend, make_memory_tools
from agentkeel.tools.types import ToolContext
from tests.memory.clienthelpers import Rig, contents, make_client, memory_rig

NS = "agent:a/user:1"


def breaker_state(rig: Rig) -> str:
    return rig.client.breaker.state


async def test_writes_and_reads_go_straight_to_a_healthy_server(tmp_path: Path) -> None:
    """With the server up, store/update/get/search/delete act at once ("stored"), carry
    the correlation id and a bearer token, and leave the outbox empty."""
    async with memory_rig(tmp_path) as rig:
        set_correlation_id("corr-memory-1")
        try:
            stored = await rig.client.store(NS, "likes green tea", tags=["drink"])
        finally:
            set_correlation_id(None)
        assert stored.stored and not stored.queued
        assert stored.memory is not None and stored.memory.id == stored.memory_id
        request = rig.transport.requests[-1]
        assert request.headers["X-Correlation-ID"] == "corr-memory-1"
        assert request.headers["Authorization"].startswith("Bearer token-a-")
        assert request.headers["Idempotency-Key"] == stored.idempotency_key

        updated = await rig.client.update(stored.memory_id, content="likes oolong tea")
        assert updated.stored and updated.memory is not None and updated.memory.version == 2
        hits = await rig.client.search(NS, "oolong")
        assert [hit.memory.id for hit in hits] == [stored.memory_id]
        got = await rig.client.get(stored.memory_id)
        assert got is not None and got.content == "likes oolong tea"
        deleted = await rig.client.delete(stored.memory_id)
        assert deleted.stored
        assert await rig.client.get(stored.memory_id) is None
        assert rig.client.pending == 0
        assert rig.gauge("agent_memory_outbox_depth") == 0


async def test_writes_queue_while_down_and_arrive_in_order_when_back(tmp_path: Path) -> None:
    """Server down: writes return "queued" with their memory id known, the depth gauge
    counts them; once back, delivery applies create, update and delete in order."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        first = await rig.client.store(NS, "first draft")
        second = await rig.client.store(NS, "to be deleted")
        edit = await rig.client.update(first.memory_id, content="final text")
        gone = await rig.client.delete(second.memory_id)
        assert [o.status for o in (first, second, edit, gone)] == ["queued"] * 4
        assert first.reason is not None and "ConnectError" in first.reason
        assert rig.client.pending == 4
        assert rig.gauge("agent_memory_outbox_depth") == 4
        assert await contents(rig.admin, NS) == []

        rig.transport.mode = "up"
        rig.clock.advance(10)
        assert await rig.client.deliver_pending() == 4
        assert await contents(rig.admin, NS) == ["final text"]
        memory = await rig.client.get(first.memory_id)
        assert memory is not None and memory.version == 2
        assert rig.gauge("agent_memory_outbox_depth") == 0
        assert rig.gauge("agent_memory_outbox_delivered_total") == 4


async def test_reads_fail_fast_once_the_breaker_opens(tmp_path: Path) -> None:
    """A read while the server is down raises MemoryUnavailable (code memory_unavailable);
    once the breaker opens, reads fail without a request, and it probes again later."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        for _ in range(2):
            with pytest.raises(MemoryUnavailable) as caught:
                await rig.client.search(NS, "tea")
            assert caught.value.code == "memory_unavailable" and caught.value.status == 503
        assert breaker_state(rig) == "open"
        sent = len(rig.transport.requests)
        with pytest.raises(MemoryUnavailable, match="fail fast") as fast:
            await rig.client.get("some-id")
        assert fast.value.retry_after is not None and fast.value.retry_after >= 1
        assert len(rig.transport.requests) == sent
        assert rig.gauge("agent_memory_client_breaker_state") == 2

        rig.transport.mode = "up"
        rig.clock.advance(3)
        assert await rig.client.search(NS, "tea") == []
        assert breaker_state(rig) == "closed"


async def test_writes_after_queued_ones_queue_too(tmp_path: Path) -> None:
    """While earlier writes wait, a new write is queued even though the server is up,
    so it cannot overtake them."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        queued = await rig.client.store(NS, "early")
        rig.transport.mode = "up"
        later = await rig.client.update(queued.memory_id, content="late")
        assert later.queued and later.reason is not None and "waiting" in later.reason
        rig.clock.advance(10)
        await rig.client.deliver_pending()
        assert await contents(rig.admin, NS) == ["late"]


async def test_a_lost_response_is_delivered_exactly_once(tmp_path: Path) -> None:
    """The server stores a write but its answer is lost: the write is queued with the
    same Idempotency-Key, and the redelivery is a no-op (one memory, replayed)."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "lose_response"
        outcome = await rig.client.store(NS, "only once")
        assert outcome.queued
        assert await contents(rig.admin, NS) == ["only once"]
        rig.transport.mode = "up"
        rig.clock.advance(10)
        assert await rig.client.deliver_pending() == 1
        assert await contents(rig.admin, NS) == ["only once"]
        keys = {r.headers["Idempotency-Key"] for r in rig.transport.requests if r.method == "POST"}
        assert keys == {outcome.idempotency_key}


async def test_fenced_writes_queue_while_reads_still_work(tmp_path: Path) -> None:
    """A 503 memory_fenced queues the write without opening the breaker; reads go on;
    after the fence lifts and Retry-After passes, the write is delivered."""
    async with memory_rig(tmp_path) as rig:
        await rig.client.store(NS, "before the fence")
        fence = await rig.admin.post("/admin/fence", json={"reason": "restore"})
        assert fence.status_code == 200
        outcome = await rig.client.store(NS, "during the fence")
        assert outcome.queued and outcome.reason is not None
        assert outcome.reason.startswith("memory_fenced")
        assert breaker_state(rig) == "closed"
        assert len(await rig.client.search(NS, "fence")) == 1
        assert await rig.client.deliver_pending() == 0

        await rig.admin.delete("/admin/fence")
        rig.clock.advance(12)
        assert await rig.client.deliver_pending() == 1
        assert await contents(rig.admin, NS) == ["before the fence", "during the fence"]


async def test_the_outbox_survives_a_restart_of_the_client(tmp_path: Path) -> None:
    """Writes queued by one client are delivered by the next client opening the same
    outbox file (the commit was the acknowledgement)."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        await rig.client.store(NS, "written before a crash")
        await rig.client.aclose()
        rig.transport.mode = "up"
        registry = CollectorRegistry()
        again = make_client(
            transport=rig.transport,
            token_file=rig.token_file,
            outbox_path=rig.outbox_path,
            clock=rig.clock,
            metrics=MemoryClientMetrics(registry),
        )
        await again.open()
        try:
            assert again.pending == 1
            assert registry.get_sample_value("agent_memory_outbox_depth") == 1
            assert await again.deliver_pending() == 1
        finally:
            await again.aclose()
        assert await contents(rig.admin, NS) == ["written before a crash"]


async def test_a_write_refused_for_good_is_kept_aside_and_delivery_goes_on(
    tmp_path: Path,
) -> None:
    """A queued update of a memory that does not exist (404) moves to the failed state
    with the server's reason; the writes after it are still delivered."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        await rig.client.update("no-such-memory", content="x")
        await rig.client.store(NS, "after the bad one")
        rig.transport.mode = "up"
        rig.clock.advance(10)
        assert await rig.client.deliver_pending() == 1
        failed = await rig.client.failed_writes()
        assert [entry.memory_id for entry in failed] == ["no-such-memory"]
        assert failed[0].last_error is not None
        assert failed[0].last_error.startswith("memory_not_found")
        assert rig.client.pending == 0
        assert rig.gauge("agent_memory_outbox_failed_total") == 1
        assert await contents(rig.admin, NS) == ["after the bad one"]


async def test_a_replicas_calls_carry_its_version(tmp_path: Path) -> None:
    """A replica's memory client labels its calls with the replica's version, refused
    writes under their error code: the judge's memory write errors per version."""
    async with memory_rig(tmp_path, version="v3") as rig:
        await rig.client.store(NS, "likes green tea")
        with pytest.raises(Forbidden) as refusal:
            await rig.client.store("agent:b/user:1", "not mine")
        registry = rig.registry
        ok = {"operation": "create_memory", "status": "ok", "version": "v3"}
        refused = {"operation": "create_memory", "status": refusal.value.code, "version": "v3"}
        assert registry.get_sample_value("agent_memory_client_calls_total", ok) == 1
        assert registry.get_sample_value("agent_memory_client_calls_total", refused) == 1


async def test_caller_mistakes_raise_and_are_never_queued(tmp_path: Path) -> None:
    """Bad fields are refused locally even while the server is down; a namespace the
    token may not write is a 403 raised to the caller, not a queued write."""
    async with memory_rig(tmp_path) as rig:
        with pytest.raises(Forbidden):
            await rig.client.store("agent:b/user:1", "not mine")
        rig.transport.mode = "down"
        with pytest.raises(InvalidRequest, match="namespace"):
            await rig.client.store("bad namespace!", "x")
        with pytest.raises(InvalidRequest, match="content is empty"):
            await rig.client.store(NS, "   ")
        with pytest.raises(InvalidRequest, match="at least one"):
            await rig.client.update("some-id")
        assert rig.client.pending == 0


async def test_server_errors_open_the_breaker_and_writes_queue_without_trying(
    tmp_path: Path,
) -> None:
    """After repeated connection failures the breaker is open: the next write is queued
    without a request, and a half-open probe by the delivery closes it again."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        await rig.client.store(NS, "one")
        await rig.client.deliver_pending()
        assert breaker_state(rig) == "open"
        sent = len(rig.transport.requests)
        await rig.client.store(NS, "two")
        assert len(rig.transport.requests) == sent
        rig.transport.mode = "up"
        assert await rig.client.flush(timeout_s=30)
        assert breaker_state(rig) == "closed"
        assert await contents(rig.admin, NS) == ["one", "two"]


async def test_background_delivery_drains_the_outbox(tmp_path: Path) -> None:
    """With the background task on, queued writes reach the server once it is back,
    without anyone calling deliver_pending."""
    async with memory_rig(tmp_path) as rig:
        rig.transport.mode = "down"
        await rig.client.store(NS, "eventually")
        await rig.client.aclose()
        rig.transport.mode = "up"
        client = make_client(
            transport=rig.transport,
            token_file=rig.token_file,
            outbox_path=rig.outbox_path,
            clock=rig.clock,
            metrics=MemoryClientMetrics(CollectorRegistry()),
            deliver_in_background=True,
        )
        await client.open()
        try:
            async with asyncio.timeout(10):
                await client.wait_drained()
        finally:
            await client.aclose()
        assert await contents(rig.admin, NS) == ["eventually"]


async def test_one_outbox_file_serves_one_process(tmp_path: Path) -> None:
    """A second outbox on the same file is refused with a message naming the fix."""
    first = MemoryOutbox(path=tmp_path / "box.db")
    await first.open()
    try:
        second = MemoryOutbox(path=tmp_path / "box.db")
        with pytest.raises(ConfigError, match="replica_id"):
            await second.open()
    finally:
        await first.aclose()


async def test_closed_client_refuses_calls(tmp_path: Path) -> None:
    """After aclose a call says the client is not open (not a crash)."""
    async with memory_rig(tmp_path) as rig:
        await rig.client.aclose()
        with pytest.raises(Unavailable, match="not open"):
            await rig.client.store(NS, "late")


def test_build_needs_a_token_file_and_names_one_outbox_per_client(tmp_path: Path) -> None:
    """Without a token file the build fails naming the setting; each client name gets
    its own outbox file under the data directory."""
    metrics = MemoryClientMetrics(CollectorRegistry())
    with pytest.raises(SecretError, match=r"memory_client\.token_file"):
        build_memory_client(
            MemoryClientSettings(),
            url="http://127.0.0.1:8788",
            name="replica-1",
            data_dir=tmp_path,
            secrets_dir=tmp_path / "secrets",
            metrics=metrics,
        )
    settings = MemoryClientSettings()
    assert outbox_path_for(settings, data_dir=tmp_path, name="replica-1") == (
        tmp_path / "memory-outbox" / "replica-1.db"
    )
    assert outbox_path_for(settings, data_dir=tmp_path, name="a/b c").name == "a-b-c.db"
    with pytest.raises(ConfigError, match="http://"):
        build_memory_client(
            settings,
            url="127.0.0.1:8788",
            name="x",
            data_dir=tmp_path,
            secrets_dir=None,
            metrics=metrics,
        )


async def test_memory_tools_run_on_the_client(tmp_path: Path) -> None:
    """The tool server's memory tools accept a MemoryClient as their backend, stored
    or queued."""
    async with memory_rig(tmp_path) as rig:
        backend: MemoryBackend = rig.client
        memory_search, memory_store = make_memory_tools(backend)
        context = ToolContext(agent_id="a", session_id="s", user_id="1", turn=1)
        stored = await memory_store(content="prefers email", context=context)
        assert stored.startswith("stored as memory ")
        found = json.loads(await memory_search(query="email", context=context))
        assert found[0]["content"] == "prefers email"
        rig.transport.mode = "down"
        queued = await memory_store(content="prefers phone", context=context)
        assert queued.startswith("stored as memory ")
        assert rig.client.pending == 1


async def test_real_clock_client_against_nothing_listening(tmp_path: Path) -> None:
    """Against a port nobody listens on, a write is queued and a read raises
    MemoryUnavailable naming the URL (the real transport's errors are converted)."""
    token = tmp_path / "token"
    token.write_text("t" * 32)
    client = make_client(
        transport=httpx.AsyncHTTPTransport(),
        token_file=token,
        outbox_path=tmp_path / "box.db",
        clock=ManualClock(),
        metrics=MemoryClientMetrics(CollectorRegistry()),
        base_url="http://127.0.0.1:9",
    )
    await client.open()
    try:
        assert (await client.store(NS, "x")).queued
        with pytest.raises(MemoryUnavailable, match=r"127\.0\.0\.1:9"):
            await client.search(NS, "x")
    finally:
        await client.aclose()
