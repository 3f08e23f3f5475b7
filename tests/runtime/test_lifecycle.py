"""The session lifecycle on SQLite and PostgreSQL, with an injected clock: sessions end
when idle or past their maximum duration, each end is recorded once across replicas,
live sessions are counted from the shared store, and retention purges and forgets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from agentkeel.config.layers import load_settings
from agentkeel.errors import Unavailable
from agentkeel.memory.namespaces import user_namespace
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.resilience.budget import TokenBudget
from agentkeel.resilience.clock import ManualClock
from agentkeel.resilience.ledger import Hold
from agentkeel.runtime.app import create_app
from agentkeel.runtime.lifecycle import SessionLifecycle
from agentkeel.runtime.service import AgentService
from agentkeel.runtime.store import SessionExpiry, SessionRecord
from agentkeel.runtime.stores import SessionBackend
from agentkeel.telemetry.metrics import ModelMetrics
from tests.memory.clienthelpers import memory_rig

StoreFactory = Callable[[], Awaitable[SessionBackend]]
ADMIN_TOKEN = "lifecycle-admin-" + "t" * 24
IDLE_S = 1800.0


@dataclass
class Replica:
    app: Starlette
    client: httpx.AsyncClient
    registry: CollectorRegistry
    store: SessionBackend
    clock: ManualClock

    @property
    def service(self) -> AgentService:
        service: AgentService = self.app.state.service
        return service

    @property
    def lifecycle(self) -> SessionLifecycle:
        return self.service.lifecycle

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def session(self, user_id: str = "ana") -> str:
        response = await self.client.post("/v1/sessions", json={"user_id": user_id})
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    async def say(self, session_id: str, content: str = "hello") -> httpx.Response:
        return await self.client.post(
            f"/v1/sessions/{session_id}/messages", json={"content": content}
        )

    async def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return await self.client.request(method, path, headers=headers, **kwargs)


ReplicaFactory = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def replicas(
    session_store_factory: StoreFactory, tmp_path: Path
) -> AsyncIterator[ReplicaFactory]:
    """Builds agent servers on the test's backend; each gets its own store object, as
    separate processes would, and all may share one manual clock."""
    token_file = tmp_path / "agent-secrets" / "admin_token"
    token_file.parent.mkdir()
    token_file.write_text(ADMIN_TOKEN + "\n")
    async with AsyncExitStack() as stack:

        async def start(
            *,
            clock: ManualClock | None = None,
            version: str = "v1",
            replica: str = "replica-1",
            agent_id: str = "default",
            sessions: dict[str, Any] | None = None,
            memory: Any | None = None,
        ) -> Replica:
            settings = load_settings(
                layers=[],
                overrides={
                    "secrets_dir": None,
                    "models": [{"name": "scripted", "kind": "scripted"}],
                    "agent": {"version": version, "id": agent_id},
                    "server": {"replica_id": replica, "admin_token_file": str(token_file)},
                    "sessions": sessions or {},
                },
            ).settings
            the_clock = clock or ManualClock()
            registry = CollectorRegistry()
            provider = ScriptedProvider(script=(), clock=the_clock, on_end="echo")
            gateway = ModelGateway(
                providers=[provider],
                breakers={},
                retry=settings.retry,
                metrics=ModelMetrics(registry),
                clock=the_clock,
            )
            store = await session_store_factory()
            app = create_app(
                settings,
                gateway=gateway,
                store=store,
                clock=the_clock,
                registry=registry,
                memory=memory,
                run_sweeper=False,
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
            )
            return Replica(app, client, registry, store, the_clock)

        yield start


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# -- ends -----------------------------------------------------------------------------


async def test_an_idle_session_ends_and_a_turn_on_it_gets_410_saying_why(
    replicas: ReplicaFactory,
) -> None:
    """Past sessions.idle_timeout_s a turn ends the session lazily and gets 410
    session_ended naming the time (last turn + timeout), the reason and the setting;
    the histograms observe it once, its length running to the last turn."""
    server = await replicas()
    session_id = await server.session()
    assert (await server.say(session_id)).status_code == 200
    server.clock.advance(120)
    assert (await server.say(session_id)).status_code == 200
    last_turn = server.clock.time()
    server.clock.advance(IDLE_S - 1)
    assert (await server.say(session_id)).status_code == 200  # still live: the clock restarts
    server.clock.advance(IDLE_S + 1)

    refused = await server.say(session_id)

    assert refused.status_code == 410
    error = error_of(refused)
    assert error["code"] == "session_ended"
    assert "idle for more than 1800 s (sessions.idle_timeout_s)" in error["message"]
    assert "start a new session" in error["message"]
    fetched = (await server.client.get(f"/v1/sessions/{session_id}")).json()
    assert fetched["end_reason"] == "idle_timeout"
    stored = await server.store.get_session(session_id)
    assert stored is not None and stored.ended_at == last_turn + (IDLE_S - 1) + IDLE_S
    again = await server.say(session_id)
    assert again.status_code == 410
    assert server.metric("agent_sessions_ended_total", agent="default", reason="idle_timeout") == 1
    assert server.metric("agent_session_duration_seconds_count", agent="default") == 1
    assert server.metric("agent_session_duration_seconds_sum", agent="default") == pytest.approx(
        120 + IDLE_S - 1
    )
    assert server.metric("agent_turns_per_session_sum", agent="default") == 3


async def test_a_busy_session_ends_at_its_maximum_duration(replicas: ReplicaFactory) -> None:
    """A session with a turn every ten minutes still ends sessions.max_duration_s after it
    started, and the 410 says so."""
    server = await replicas(sessions={"max_duration_s": 3600})
    session_id = await server.session()
    started = server.clock.time()
    for _ in range(6):
        assert (await server.say(session_id)).status_code == 200
        server.clock.advance(600)

    refused = await server.say(session_id)

    assert refused.status_code == 410
    assert "maximum duration of 3600 s (sessions.max_duration_s)" in error_of(refused)["message"]
    stored = await server.store.get_session(session_id)
    assert stored is not None
    assert (stored.ended_at, stored.end_reason) == (started + 3600, "max_duration")
    assert server.metric("agent_session_duration_seconds_sum", agent="default") == 3600


async def test_each_end_is_recorded_once_by_two_replicas_sweeping_one_store(
    replicas: ReplicaFactory,
) -> None:
    """Two replicas sweeping the same store at the same moment, in small batches, end
    every expired session exactly once between them: the histograms of both together
    observe each session once; a live session is left alone."""
    clock = ManualClock()
    settings = {"sweep_batch": 3, "sweep_grace_s": 0}
    one = await replicas(clock=clock, replica="replica-1", sessions=settings)
    two = await replicas(clock=clock, replica="replica-2", sessions=settings)
    idle = [await one.session(f"user-{n}") for n in range(5)]
    idle += [await two.session(f"user-{n}") for n in range(5, 10)]
    clock.advance(IDLE_S + 1)
    live = await one.session("live-user")

    ended = await asyncio.gather(one.lifecycle.sweep(), two.lifecycle.sweep())

    assert sum(ended) == len(idle)
    observed = sum(
        server.metric("agent_session_duration_seconds_count", agent="default")
        for server in (one, two)
    )
    assert observed == len(idle)
    for session_id in idle:
        stored = await one.store.get_session(session_id)
        assert stored is not None and stored.end_reason == "idle_timeout"
    live_session = await one.store.get_session(live)
    assert live_session is not None and live_session.ended_at is None
    assert await one.lifecycle.sweep() + await two.lifecycle.sweep() == 0


async def test_a_lazy_end_and_a_sweep_racing_record_the_end_once(
    replicas: ReplicaFactory,
) -> None:
    """A turn on one replica and a sweep on another both find the session expired; only
    one records the end, and the turn still gets 410."""
    clock = ManualClock()
    one = await replicas(clock=clock, sessions={"sweep_grace_s": 0})
    two = await replicas(clock=clock, replica="replica-2", sessions={"sweep_grace_s": 0})
    session_id = await one.session()
    clock.advance(IDLE_S + 5)

    refused, swept = await asyncio.gather(one.say(session_id), two.lifecycle.sweep())

    assert refused.status_code == 410
    counts = [
        server.metric("agent_sessions_ended_total", agent="default", reason="idle_timeout")
        for server in (one, two)
    ]
    assert sum(counts) == 1
    assert swept == counts[1]


async def test_the_sweeper_leaves_a_turn_in_flight_its_grace(replicas: ReplicaFactory) -> None:
    """A session just past its idle timeout but within sessions.sweep_grace_s is not
    ended by the sweeper (a turn may still be running elsewhere); past it, it is."""
    server = await replicas(sessions={"sweep_grace_s": 300})
    session_id = await server.session()
    server.clock.advance(IDLE_S + 100)
    assert await server.lifecycle.sweep() == 0
    server.clock.advance(250)
    assert await server.lifecycle.sweep() == 1
    stored = await server.store.get_session(session_id)
    assert stored is not None and stored.end_reason == "idle_timeout"


async def test_a_read_leaves_a_turn_in_flight_its_grace_too(replicas: ReplicaFactory) -> None:
    """GET on a session just past its idle timeout, within sessions.sweep_grace_s, does
    not end it (a long turn may be about to commit on another replica); past the grace
    it does, with the end time the rule gives."""
    server = await replicas(sessions={"sweep_grace_s": 300})
    session_id = await server.session()
    created = server.clock.time()
    server.clock.advance(IDLE_S + 100)
    fetched = (await server.client.get(f"/v1/sessions/{session_id}")).json()
    assert fetched["ended_at"] is None
    server.clock.advance(250)
    fetched = (await server.client.get(f"/v1/sessions/{session_id}")).json()
    assert fetched["end_reason"] == "idle_timeout"
    stored = await server.store.get_session(session_id)
    assert stored is not None and stored.ended_at == created + IDLE_S


async def test_the_background_task_sweeps_and_purges_on_its_intervals(
    replicas: ReplicaFactory,
) -> None:
    """run() sweeps every sweep_interval_s and purges every purge_interval_s of its own
    sleeps, and keeps going when a sweep fails, with a KeelError or with any other."""
    server = await replicas(sessions={"sweep_interval_s": 60, "purge_interval_s": 180})
    calls: list[str] = []
    sleeps: list[float] = []

    async def fake_sweep() -> int:
        calls.append("sweep")
        if len(calls) == 1:
            raise Unavailable("store down")
        if len(calls) == 2:
            raise RuntimeError("a bug in a sweep")
        return 0

    async def fake_purge(*, dry_run: bool = False) -> Any:
        calls.append("purge")

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 6:
            raise asyncio.CancelledError

    lifecycle = SessionLifecycle(
        store=server.store,
        settings=server.lifecycle.settings,
        metrics=server.service.metrics,
        clock=server.clock,
        replica="r",
        version="v1",
        sleep=fake_sleep,
    )
    lifecycle.sweep = fake_sweep  # type: ignore[method-assign]
    lifecycle.purge = fake_purge  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await lifecycle.run()

    assert sleeps == [60.0] * 7
    assert calls == ["sweep", "sweep", "sweep", "purge", "sweep", "sweep", "sweep", "purge"]


# -- live sessions --------------------------------------------------------------------


async def test_live_sessions_are_counted_by_version_and_replica_across_replicas(
    replicas: ReplicaFactory,
) -> None:
    """Replicas of two versions on one store report the same store-wide live count per
    version, each its own share by last replica; idle and ended sessions do not count.
    /admin/sessions/live answers the same figures."""
    clock = ManualClock()
    blue = await replicas(clock=clock, version="v1", replica="blue-1")
    green = await replicas(clock=clock, version="v2", replica="green-1")
    stale = await blue.session("old")
    clock.advance(IDLE_S + 1)
    b1, b2 = await blue.session("a"), await blue.session("b")
    g1 = await green.session("c")
    await green.say(b2)  # a v1 session whose last turn green served
    deleted = await green.session("d")
    await green.client.delete(f"/v1/sessions/{deleted}")
    assert stale and b1 and g1

    await blue.lifecycle.refresh_gauges()
    await green.lifecycle.refresh_gauges()

    for server in (blue, green):
        assert server.metric("agent_live_sessions", version="v1") == 2
        assert server.metric("agent_live_sessions", version="v2") == 1
        assert server.metric("agent_active_sessions") == 4  # the idle one is not ended yet
    assert blue.metric("agent_replica_live_sessions") == 1
    assert green.metric("agent_replica_live_sessions") == 2
    report = (await blue.admin("GET", "/admin/sessions/live")).json()
    assert report["by_version"] == {"v1": 2, "v2": 1}
    assert report["by_replica"] == {"blue-1": 1, "green-1": 2}
    assert (report["replica"], report["live"], report["total"]) == ("blue-1", 1, 3)


async def test_a_scrape_recounts_live_sessions_when_the_gauges_are_stale(
    replicas: ReplicaFactory,
) -> None:
    """/metrics refreshes the live gauges when older than sessions.live_refresh_s, so a
    version whose sessions all went idle drops to 0 without waiting for a sweep."""
    server = await replicas(sessions={"live_refresh_s": 5})
    await server.session()
    server.clock.advance(6)
    text = (await server.client.get("/metrics")).text
    assert 'agent_live_sessions{version="v1"} 1.0' in text
    server.clock.advance(IDLE_S)
    text = (await server.client.get("/metrics")).text
    assert 'agent_live_sessions{version="v1"} 0.0' in text
    assert "agent_replica_live_sessions 0.0" in text


async def test_admin_session_routes_need_the_admin_token(replicas: ReplicaFactory) -> None:
    """Without a bearer token the admin session routes are 401, with a wrong one 403."""
    server = await replicas()
    for method, path in (
        ("GET", "/admin/sessions/live"),
        ("POST", "/admin/sessions/prune"),
        ("POST", "/admin/sessions/forget"),
    ):
        assert (await server.client.request(method, path)).status_code == 401
        wrong = await server.client.request(
            method, path, headers={"Authorization": "Bearer not-the-token"}
        )
        assert wrong.status_code == 403


# -- retention ------------------------------------------------------------------------


async def test_retention_purges_only_old_ended_sessions_in_batches(
    replicas: ReplicaFactory,
) -> None:
    """A dry run counts what would go and removes nothing; the purge removes sessions that
    ended over retention_days ago with their turns, feedback and budget rows, batch by
    batch with a pause between, and leaves recently ended and live sessions alone. The
    old users' day quota rows (31 days old) go too; today's stay."""
    server = await replicas(sessions={"retention_days": 30, "purge_batch": 2, "purge_pause_s": 0.5})
    old = [await server.session(f"old-{n}") for n in range(5)]
    for session_id in old:
        assert (await server.say(session_id)).status_code == 200
        await server.client.post(f"/v1/sessions/{session_id}/feedback", json={"score": 4})
        await server.client.delete(f"/v1/sessions/{session_id}")
    server.clock.advance(31 * 86_400)
    recent = await server.session("recent")
    await server.say(recent)
    await server.client.delete(f"/v1/sessions/{recent}")
    live = await server.session("live")
    await server.say(live)

    dry = (await server.admin("POST", "/admin/sessions/prune", json={"dry_run": True})).json()

    assert dry == {
        "dry_run": True,
        "retention_days": 30.0,
        "sessions": 5,
        "turns": 5,
        "feedback": 5,
        "budget_rows": 10,  # 5 session rows, 5 day rows of 2023-11-14
        "usage_rows": 0,
    }
    assert await server.store.get_session(old[0]) is not None
    server.clock.slept.clear()
    done = (await server.admin("POST", "/admin/sessions/prune", json={})).json()

    assert (done["sessions"], done["turns"], done["feedback"], done["budget_rows"]) == (
        5,
        5,
        5,
        10,
    )
    assert server.clock.slept == [0.5] * 4  # batches of 2, 2, 1: sessions, then day rows
    assert await server.store.used("user:old-0:2023-11-14") == 0
    assert await server.store.used("user:live:2023-12-15") > 0
    for session_id in old:
        assert await server.store.get_session(session_id) is None
        assert await server.store.list_turns(session_id) == []
        assert await server.store.list_feedback(session_id) == []
        assert await server.store.used(TokenBudget.session_key(session_id)) == 0
    for session_id in (recent, live):
        assert len(await server.store.list_turns(session_id)) == 1
    assert (await server.client.get(f"/v1/sessions/{old[0]}")).status_code == 404
    assert server.metric("agent_sessions_purged_total") == 5
    again = (await server.admin("POST", "/admin/sessions/prune", json={})).json()
    assert again["sessions"] == 0


async def test_quota_rows_go_once_their_window_ended_more_than_its_margin_ago(
    replicas: ReplicaFactory,
) -> None:
    """The sweep keeps a day's rows until two days after the day ended and a month's until
    35 days after the month ended (clock skew, late readers), then deletes them; a dry
    run counts them in budget_rows; sessions' rows are left to the transcript purge."""
    # 2023-12-03T12:00:00Z: 2023-12-01 ended 1.5 days ago, 2023-11-30 2.5 days ago;
    # October ended 33 days ago, September 63.
    clock = ManualClock(wall_start=datetime(2023, 12, 3, 12, tzinfo=UTC).timestamp())
    server = await replicas(clock=clock)
    stale = ["user:ana:2023-11-30", "orgquota:acme:2023-09", "org:acme:user:bo:2023-09"]
    fresh = ["user:ana:2023-12-01", "user:ana:2023-12-03", "orgquota:acme:2023-10"]
    for key in [*stale, *fresh, "session:s-1"]:
        assert (await server.store.reserve([Hold(key, 100)], 10)).ok
    dry = await server.lifecycle.purge(dry_run=True)
    assert dry.budget_rows == len(stale)
    done = await server.lifecycle.purge()
    assert (done.sessions, done.budget_rows) == (0, len(stale))
    for key in stale:
        assert (await server.store.reserve([Hold(key, 10)], 10)).ok, key  # a new, empty row
    for key in [*fresh, "session:s-1"]:
        assert not (await server.store.reserve([Hold(key, 10)], 10)).ok, key


# -- forget ---------------------------------------------------------------------------


async def test_forget_removes_a_users_sessions_turns_budgets_and_memory_namespaces(
    replicas: ReplicaFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """forget removes the user's sessions (ended or live), turns, feedback and budget rows,
    and empties their memory namespace through the memory server's API; another user's
    data stays; the audit line names the credential by fingerprint, never the token (and the
    memory server writes its own)."""
    async with memory_rig(tmp_path) as rig:
        server = await replicas(agent_id="a1", memory=rig.client)
        mine = [await server.session("ana"), await server.session("ana")]
        for session_id in mine:
            await server.say(session_id)
        await server.client.delete(f"/v1/sessions/{mine[0]}")
        theirs = await server.session("bob")
        await server.say(theirs)
        for text in ("likes tea", "lives in Porto"):
            await rig.client.store("agent:a1/user:ana", text, tags=[])
        await rig.client.store("agent:a1/user:bob", "likes coffee", tags=[])

        dry = (
            await server.admin(
                "POST", "/admin/sessions/forget", json={"user_id": "ana", "dry_run": True}
            )
        ).json()
        assert (dry["sessions"], dry["turns"]) == (2, 2)
        assert dry["memory"]["namespaces"] == {"agent:a1/user:ana": None}
        assert len(await rig.client.search("agent:a1/user:ana", "tea", limit=5)) == 1

        with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
            done = (
                await server.admin("POST", "/admin/sessions/forget", json={"user_id": "ana"})
            ).json()

        assert (done["sessions"], done["turns"]) == (2, 2)
        assert done["budget_rows"] >= 3  # two session rows and today's daily row
        assert done["memory"] == {"configured": True, "namespaces": {"agent:a1/user:ana": 2}}
        for session_id in mine:
            assert await server.store.get_session(session_id) is None
            assert await server.store.list_turns(session_id) == []
        day_key = f"user:ana:{_day(server.clock.time())}"
        assert await server.store.used(day_key) == 0
        assert await server.store.used(f"user:bob:{_day(server.clock.time())}") > 0
        assert len(await server.store.list_turns(theirs)) == 1
        assert await rig.client.search("agent:a1/user:ana", "tea", limit=5) == []
        assert len(await rig.client.search("agent:a1/user:bob", "coffee", limit=5)) == 1
    audits = {
        r.__dict__["action"]: r for r in caplog.records if r.__dict__.get("category") == "audit"
    }
    assert set(audits) == {"sessions.forget", "memory.delete_namespace"}
    assert audits["memory.delete_namespace"].__dict__["deleted"] == 2
    line = audits["sessions.forget"]
    assert line.__dict__["user_id"] == "ana"
    assert line.__dict__["sessions"] == 2
    assert line.__dict__["actor"].startswith("server.admin_token:sha256:")
    assert ADMIN_TOKEN not in line.getMessage() and ADMIN_TOKEN not in str(line.__dict__)


async def test_forget_of_an_unknown_user_removes_nothing(replicas: ReplicaFactory) -> None:
    """A user with no sessions is not an error: every count is 0."""
    server = await replicas()
    await server.session("ana")
    response = await server.admin("POST", "/admin/sessions/forget", json={"user_id": "nobody"})
    assert response.status_code == 200
    body = response.json()
    assert (body["sessions"], body["turns"], body["budget_rows"]) == (0, 0, 0)
    assert body["memory"] == {"configured": False, "namespaces": {}}


async def test_forget_never_matches_a_user_whose_id_extends_anothers(
    replicas: ReplicaFactory,
) -> None:
    """Forgetting user 'a' leaves the budget rows of user 'a:b' alone."""
    server = await replicas()
    for user in ("a", "a:b"):
        await server.say(await server.session(user))
    await server.admin("POST", "/admin/sessions/forget", json={"user_id": "a"})
    assert await server.store.used(f"user:a:b:{_day(server.clock.time())}") > 0


async def _org_sessions(server: Replica, rig: Any) -> dict[tuple[str | None, str], str]:
    """Sessions (with one turn) of user bob in acme, in globex and without an organization,
    and of carol in acme; a memory in each one's namespace."""
    made: dict[tuple[str | None, str], str] = {}
    for org, user in ((None, "bob"), ("acme", "bob"), ("globex", "bob"), ("acme", "carol")):
        record = await server.service.create_session(user, organization=org)
        assert (await server.say(record.session_id)).status_code == 200
        made[(org, user)] = record.session_id
        await rig.client.store(user_namespace("a1", user, org), f"{org}/{user}", tags=[])
    return made


async def _memories(rig: Any, org: str | None, user: str) -> int:
    return len(await rig.client.search(user_namespace("a1", user, org), "", limit=5))


async def test_forget_in_one_organization_leaves_the_same_user_id_of_another(
    replicas: ReplicaFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """forget {user_id: bob, organization: acme} removes acme's bob only: sessions, daily
    budget row and memory namespace; globex's bob, bob without an organization and acme's
    carol keep theirs. The audit line names the organization."""
    async with memory_rig(tmp_path) as rig:
        server = await replicas(agent_id="a1", memory=rig.client)
        made = await _org_sessions(server, rig)
        day = _day(server.clock.time())
        assert await server.store.used(f"org:acme:user:bob:{day}") > 0
        assert await server.store.used(f"org:globex:user:bob:{day}") > 0

        dry = (
            await server.admin(
                "POST",
                "/admin/sessions/forget",
                json={"user_id": "bob", "organization": "acme", "dry_run": True},
            )
        ).json()
        assert (dry["sessions"], dry["organization"]) == (1, "acme")
        assert dry["memory"]["namespaces"] == {"agent:a1/org:acme/user:bob": None}

        with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
            done = (
                await server.admin(
                    "POST",
                    "/admin/sessions/forget",
                    json={"user_id": "bob", "organization": "acme"},
                )
            ).json()

        assert done["sessions"] == 1
        assert done["memory"]["namespaces"] == {"agent:a1/org:acme/user:bob": 1}
        assert await server.store.get_session(made[("acme", "bob")]) is None
        for kept in (("globex", "bob"), (None, "bob"), ("acme", "carol")):
            assert await server.store.get_session(made[kept]) is not None
            assert await _memories(rig, *kept) == 1
        assert await _memories(rig, "acme", "bob") == 0
        assert await server.store.used(f"org:acme:user:bob:{day}") == 0
        assert await server.store.used(f"org:globex:user:bob:{day}") > 0
        assert await server.store.used(f"user:bob:{day}") > 0
    line = next(r for r in caplog.records if r.__dict__.get("action") == "sessions.forget")
    assert (line.__dict__["organization"], line.__dict__["user_id"]) == ("acme", "bob")


async def test_forget_without_an_organization_removes_the_user_id_in_every_one(
    replicas: ReplicaFactory, tmp_path: Path
) -> None:
    """forget {user_id: bob} removes bob's sessions, daily budget rows and memory
    namespaces in acme, in globex and without an organization; carol keeps hers."""
    async with memory_rig(tmp_path) as rig:
        server = await replicas(agent_id="a1", memory=rig.client)
        made = await _org_sessions(server, rig)
        day = _day(server.clock.time())
        expected = {
            "agent:a1/user:bob": 1,
            "agent:a1/org:acme/user:bob": 1,
            "agent:a1/org:globex/user:bob": 1,
        }

        dry = (
            await server.admin(
                "POST", "/admin/sessions/forget", json={"user_id": "bob", "dry_run": True}
            )
        ).json()
        assert dry["sessions"] == 3 and dry["organization"] is None
        assert dry["budget_rows"] == 6  # three session rows and three daily rows
        assert dry["memory"]["namespaces"] == dict.fromkeys(expected)

        done = (
            await server.admin("POST", "/admin/sessions/forget", json={"user_id": "bob"})
        ).json()

        assert (done["sessions"], done["budget_rows"]) == (3, 6)
        assert done["memory"]["namespaces"] == expected
        for org in (None, "acme", "globex"):
            assert await server.store.get_session(made[(org, "bob")]) is None
            assert await _memories(rig, org, "bob") == 0
        for key in (f"user:bob:{day}", f"org:acme:user:bob:{day}", f"org:globex:user:bob:{day}"):
            assert await server.store.used(key) == 0
        assert await server.store.get_session(made[("acme", "carol")]) is not None
        assert await _memories(rig, "acme", "carol") == 1
        assert await server.store.used(f"org:acme:user:carol:{day}") > 0


async def test_forget_in_every_organization_never_matches_a_longer_user_id(
    replicas: ReplicaFactory,
) -> None:
    """Forgetting user 'b' everywhere leaves the daily budget rows of users 'x:user:b' and
    'b:x' of an organization alone."""
    server = await replicas()
    for user in ("b", "x:user:b", "b:x"):
        record = await server.service.create_session(user, organization="acme")
        await server.say(record.session_id)
    await server.admin("POST", "/admin/sessions/forget", json={"user_id": "b"})
    day = _day(server.clock.time())
    assert await server.store.used(f"org:acme:user:b:{day}") == 0
    assert await server.store.used(f"org:acme:user:x:user:b:{day}") > 0
    assert await server.store.used(f"org:acme:user:b:x:{day}") > 0


async def test_forget_with_a_bad_body_is_422(replicas: ReplicaFactory) -> None:
    """forget needs a user_id of 1 to 256 characters."""
    server = await replicas()
    response = await server.admin("POST", "/admin/sessions/forget", json={"user_id": ""})
    assert response.status_code == 422
    assert "user_id" in error_of(response)["message"]


# -- the expiry rule ------------------------------------------------------------------


def test_expiry_is_the_earlier_of_idle_and_maximum_duration() -> None:
    """end_of picks whichever limit trips first; 0 turns a limit off; both off: never."""
    session = SessionRecord(
        session_id="s",
        user_id="u",
        agent_id="a",
        version="v",
        created_at=1000.0,
        last_active_at=5000.0,
    )
    assert SessionExpiry(idle_timeout_s=1800, max_duration_s=0).end_of(session) == (
        6800.0,
        "idle_timeout",
    )
    assert SessionExpiry(idle_timeout_s=1800, max_duration_s=4000).end_of(session) == (
        5000.0,
        "max_duration",
    )
    assert SessionExpiry().end_of(session) is None
    assert SessionExpiry(idle_timeout_s=1800).expired(session, now=6799.0) is None
    assert SessionExpiry(idle_timeout_s=1800).expired(session, now=6800.0) == (
        6800.0,
        "idle_timeout",
    )


def _day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")
