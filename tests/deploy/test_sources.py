"""The judge's metric sources: real replicas' /metrics over HTTP, and a Prometheus-API
stand-in on a real socket (the real Prometheus comes with its own integration test)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentkeel.config.judge import JudgeSettings
from agentkeel.config.layers import load_settings
from agentkeel.deploy.selectors import parse_selector
from agentkeel.deploy.sources import PrometheusSource, ReplicaScrapeSource, queries_for
from agentkeel.errors import ConfigError, Unavailable
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import CallTools, Say, ScriptedProvider
from agentkeel.resilience.clock import SystemClock
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.metrics import ModelMetrics
from tests.tools.servers import LiveServer, free_port

# One tool call per session: 1+2 succeeds, 1/0 fails (the calculator refuses it).
GOOD = [CallTools.one("calculator", expression="1+2"), Say("3")]
BAD = [CallTools.one("calculator", expression="1/0"), Say("no")]


@dataclass
class Replica:
    version: str
    server: LiveServer
    data_dir: Path
    script: list[Any] = field(default_factory=list)
    turns: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    async def turn(self) -> None:
        """One session with one turn (one tool call: the scripted model starts its
        script afresh for each new conversation, told apart by its first message)."""
        self.turns += 1
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            created = await client.post("/v1/sessions", json={"user_id": "u"})
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
            said = await client.post(
                f"/v1/sessions/{sid}/messages", json={"content": f"go {self.turns}"}
            )
            assert said.status_code == 200, said.text


def replica_app(version: str, data_dir: Path, script: Sequence[Any]) -> Any:
    settings = load_settings(
        layers=[],
        overrides={
            "data_dir": str(data_dir),
            "secrets_dir": None,
            "store": {"url": f"sqlite:///{data_dir / 'sessions.db'}"},
            "models": [{"name": "scripted", "kind": "scripted"}],
            "agent": {"version": version, "tools": ["calculator"]},
        },
    ).settings
    registry = CollectorRegistry()
    gateway = ModelGateway(
        providers=[ScriptedProvider(script=list(script))],
        breakers={},
        retry=settings.retry,
        metrics=ModelMetrics(registry, version=version),
        clock=SystemClock(),
    )
    return create_app(settings, gateway=gateway, registry=registry, run_sweeper=False)


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:

        async def start(version: str, script: Sequence[Any], name: str) -> Replica:
            data_dir = tmp_path / name
            data_dir.mkdir()
            server = LiveServer(replica_app(version, data_dir, script))
            await server.start()
            stack.push_async_callback(server.stop)
            return Replica(version, server, data_dir, list(script))

        yield start


def only(*names: str) -> JudgeSettings:
    settings = JudgeSettings()
    for name, rate in settings.rates.items():
        rate.enabled = name in names
    for name, dist in settings.distributions.items():
        dist.enabled = name in names
    return settings


async def test_replica_source_sums_replicas_per_version_since_the_baseline(replicas: Any) -> None:
    """Two v1 replicas and one v2 replica, scraped over HTTP: counts are summed per
    version, and what was counted before ``start()`` is not."""
    a = await replicas("v1", GOOD, "a")
    b = await replicas("v1", BAD, "b")
    c = await replicas("v2", BAD, "c")
    await a.turn()  # before the baseline
    table = {"v1": [a.url, b.url], "v2": [c.url]}
    source = ReplicaScrapeSource(
        replica_urls_by_version=lambda: table,
        settings=only("tool_success", "turn_errors", "turn_latency", "tokens_per_turn"),
    )
    try:
        await source.start()
        await a.turn()
        await a.turn()
        await b.turn()
        await c.turn()
        v1 = await source.read("v1")
        v2 = await source.read("v2")
    finally:
        await source.aclose()
    assert v1.version == "v1"
    assert (v1.rates["tool_success"].events, v1.rates["tool_success"].trials) == (1, 3)
    assert (v2.rates["tool_success"].events, v2.rates["tool_success"].trials) == (1, 1)
    assert (v1.rates["turn_errors"].events, v1.rates["turn_errors"].trials) == (0, 3)
    latency = v1.distributions["turn_latency"]
    assert latency.cumulative[-1] == 3 and math.isinf(latency.bounds[-1])
    assert list(latency.cumulative) == sorted(latency.cumulative)
    assert v2.distributions["tokens_per_turn"].cumulative[-1] == 1


async def test_replica_source_survives_a_replica_restart_and_an_outage(replicas: Any) -> None:
    """A replica restarted (its counters back at zero) loses none of what it had counted;
    one that does not answer keeps its last figures; none answering is Unavailable."""
    a = await replicas("v1", GOOD, "a")
    async_table: dict[str, list[str]] = {"v1": [a.url]}

    async def table() -> Mapping[str, Sequence[str]]:
        return async_table

    source = ReplicaScrapeSource(replica_urls_by_version=table, settings=only("tool_success"))
    try:
        await source.start()
        await a.turn()
        await a.turn()
        assert (await source.read("v1")).rates["tool_success"].trials == 2
        await a.server.stop()
        with pytest.raises(Unavailable) as down:
            await source.read("v1")
        assert down.value.code == "metrics_unavailable"
        a.server.app = replica_app("v1", a.data_dir, GOOD)  # a fresh process: counters at 0
        await a.server.start()
        await a.turn()
        window = await source.read("v1")
        assert window.rates["tool_success"].trials == 3
        # A second replica that never answers: the first one's figures still come through.
        async_table["v1"] = [a.url, f"http://127.0.0.1:{free_port()}"]
        assert (await source.read("v1")).rates["tool_success"].trials == 3
        assert (await source.read("v9")).rates["tool_success"].trials == 0
    finally:
        await source.aclose()


# --- Prometheus -----------------------------------------------------------------------


@dataclass
class PrometheusStandIn:
    """Answers /api/v1/query from a table: query text -> vector result, as Prometheus'
    HTTP API does; unknown queries get Prometheus' 400 ``bad_data`` answer."""

    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def query(request: Request) -> JSONResponse:
            text = request.query_params.get("query", "")
            self.seen.append(text)
            if text == "scalar(1)":
                return JSONResponse(
                    {"status": "success", "data": {"resultType": "matrix", "result": []}}
                )
            if text not in self.results:
                return JSONResponse(
                    {"status": "error", "errorType": "bad_data", "error": f"unknown {text}"},
                    status_code=400,
                )
            return JSONResponse(
                {
                    "status": "success",
                    "data": {"resultType": "vector", "result": self.results[text]},
                }
            )

        async def labels(request: Request) -> JSONResponse:
            return JSONResponse({"status": "success", "data": self.versions})

        return Starlette(
            routes=[
                Route("/api/v1/query", query),
                Route("/api/v1/label/version/values", labels),
            ]
        )

    def set(self, query: str, value: float, **labels: str) -> None:
        self.results[query] = [{"metric": labels, "value": [1700000000.0, str(value)]}]

    def set_buckets(self, query: str, buckets: Mapping[str, float]) -> None:
        self.results[query] = [
            {"metric": {"le": le}, "value": [1700000000.0, str(v)]} for le, v in buckets.items()
        ]


def test_queries_are_written_out_from_the_selectors() -> None:
    """The default PromQL asks for every series of each selector with the version added
    (no sum, so restarts are bridged per series); a metric's own query wins."""
    settings = JudgeSettings.model_validate(
        {"rates": {"turn_errors": {"events_query": 'sum(my_errors{v="{version}"})'}}}
    )
    queries = queries_for(settings)
    events, trials = queries.rates["tool_success"]
    assert events == 'agent_tool_calls_total{status!="success",version="{version}"}'
    assert trials == 'agent_tool_calls_total{version="{version}"}'
    assert " or " in queries.rates["model_errors"][1]
    assert queries.rates["turn_errors"][0] == 'sum(my_errors{v="{version}"})'
    assert (
        queries.distributions["turn_latency"]
        == 'agent_turn_duration_seconds_bucket{version="{version}"}'
    )


async def test_prometheus_source_bridges_a_restart_per_series() -> None:
    """Two replicas of v2; one restarts (its series drops to a few counts): the window
    keeps the survivor's increase and adds the restarted one's new counts, rather than
    counting the survivor's whole history as new."""
    queries = queries_for(only("tool_success"))
    stand_in = PrometheusStandIn(versions=["v2"])
    events, trials = (q.replace("{version}", "v2") for q in queries.rates["tool_success"])

    def at(a: tuple[float, float], b: tuple[float, float]) -> None:
        for query, index in ((events, 0), (trials, 1)):
            stand_in.results[query] = [
                {"metric": {"instance": name}, "value": [1700000000.0, str(pair[index])]}
                for name, pair in (("a:8081", a), ("b:8082", b))
            ]

    at((10, 1000), (10, 1000))
    server = LiveServer(stand_in.app())
    await server.start()
    source = PrometheusSource(url=server.url, queries=queries)
    try:
        await source.start()
        at((15, 1050), (15, 1050))
        first = (await source.read("v2")).rates["tool_success"]
        at((16, 1060), (1, 5))  # b restarted: its counter starts again from 0
        second = (await source.read("v2")).rates["tool_success"]
    finally:
        await source.aclose()
        await server.stop()
    assert (first.events, first.trials) == (10, 100)
    assert (second.events, second.trials) == (10 + 1 + 1, 100 + 10 + 5)


def test_bad_selectors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="metric name"):
        parse_selector('{status="x"}')
    with pytest.raises(ConfigError, match="matcher"):
        parse_selector("agent_turns_total{status=ok}")
    with pytest.raises(ConfigError, match="regex"):
        parse_selector('agent_turns_total{status=~"("}')
    sel = parse_selector('agent_turns_total{status!~"ok|queued", agent="a"}')
    assert sel.matches({"status": "failed", "agent": "a"})
    assert not sel.matches({"status": "queued", "agent": "a"})
    assert not sel.matches({"status": "failed", "agent": "b"})


async def test_prometheus_source_reads_windows_since_the_baseline() -> None:
    """Rates and bucket counts per version from the API, baseline subtracted, a drop in a
    sum (a replica restarted) bridged; the version is put into the queries."""
    settings = only("tool_success", "turn_latency")
    queries = queries_for(settings)
    stand_in = PrometheusStandIn(versions=["v1", "v2"])
    events, trials = queries.rates["tool_success"]
    buckets = queries.distributions["turn_latency"]

    def at(version: str, failed: float, calls: float, le: Mapping[str, float]) -> None:
        stand_in.set(events.replace("{version}", version), failed)
        stand_in.set(trials.replace("{version}", version), calls)
        stand_in.set_buckets(buckets.replace("{version}", version), le)

    at("v1", 40, 1000, {"0.5": 900, "1.0": 990, "+Inf": 1000})
    at("v2", 0, 0, {})
    server = LiveServer(stand_in.app())
    await server.start()
    source = PrometheusSource(url=server.url, queries=queries)
    try:
        await source.start()
        at("v1", 90, 2000, {"0.5": 1800, "1.0": 1990, "+Inf": 2000})
        at("v2", 10, 100, {"0.5": 50, "1.0": 90, "+Inf": 100})
        v1 = await source.read("v1")
        v2 = await source.read("v2")
        at("v2", 3, 30, {"0.5": 10, "1.0": 25, "+Inf": 30})  # a v2 replica restarted
        v2_after = await source.read("v2")
    finally:
        await source.aclose()
        await server.stop()
    assert (v1.rates["tool_success"].events, v1.rates["tool_success"].trials) == (50, 1000)
    assert v1.distributions["turn_latency"].bounds == (0.5, 1.0, math.inf)
    assert v1.distributions["turn_latency"].cumulative == (900, 1000, 1000)
    assert (v2.rates["tool_success"].events, v2.rates["tool_success"].trials) == (10, 100)
    assert (v2_after.rates["tool_success"].events, v2_after.rates["tool_success"].trials) == (
        13,
        130,
    )
    assert v2_after.distributions["turn_latency"].cumulative[-1] == 130
    assert any('version="v2"' in q for q in stand_in.seen)


async def test_prometheus_source_errors_are_unavailable() -> None:
    """A query Prometheus refuses, or no Prometheus at all, is ``Unavailable`` with a
    message naming the URL."""
    stand_in = PrometheusStandIn()
    server = LiveServer(stand_in.app())
    await server.start()
    source = PrometheusSource(url=server.url, queries=queries_for(only("tool_success")))
    try:
        with pytest.raises(Unavailable, match="refused"):
            await source.read("v1")
    finally:
        await source.aclose()
        await server.stop()
    gone = PrometheusSource(
        url=f"http://127.0.0.1:{free_port()}", queries=queries_for(only("tool_success"))
    )
    try:
        with pytest.raises(Unavailable, match="cannot be read"):
            await gone.start(["v1"])
    finally:
        await gone.aclose()
    with pytest.raises(ConfigError, match=r"prometheus\.url"):
        PrometheusSource.from_settings(JudgeSettings())
