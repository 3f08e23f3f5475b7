"""The promtool unit-test cases of the five alerts, generated from the settings.

Each case drives the real metric families (``AgentMetrics``, ``ModelMetrics``,
``MemoryMetrics``) of one or more simulated processes through a scripted stretch of
traffic, scrapes their registries every interval as Prometheus would (adding ``job``
and ``instance``), and says which alerts must fire at the end, with which labels and
value. Traffic levels, bad values and durations come from the settings, so a changed
threshold, window or ``for`` changes the series with it.

Read a case by its traffic function: ``replica.turns("ok", 76)`` per interval is 76
successful turns every 15 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from agentkeel.assets.alert_rules import (
    CONTEXT_EXHAUSTION,
    ERROR_RATE,
    MEMORY_LATENCY,
    MODEL_TIMEOUTS,
    SESSION_DURATION,
)
from agentkeel.config.alerts import AlertSettings
from agentkeel.config.durations import duration_seconds
from agentkeel.memory.metrics import MemoryMetrics
from agentkeel.telemetry.metrics import AgentMetrics, ModelMetrics

AGENT = "default"
PROVIDER = "openai"
MODEL = "gpt-4o-mini"
FAST_INTERVAL_S = 15
"""Scrape interval of the turn, model and memory cases (a few seconds to a minute is
usual)."""
SESSION_INTERVAL_S = 60
"""Sessions end a few times a minute at most: the session cases scrape every minute."""

Series = dict[str, list[float | None]]
"""promtool input series: the series' text → its value at each scrape (None: absent)."""


# -- simulated processes ---------------------------------------------------------------


class Process:
    """One scraped process: its registry and the target labels Prometheus adds."""

    def __init__(self, *, job: str, instance: str) -> None:
        self.registry = CollectorRegistry()
        self.target = {"job": job, "instance": instance}

    def scrape(self) -> dict[str, float]:
        """Every sample of the registry as Prometheus stores it (``_created`` left out)."""
        samples: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = {**sample.labels, **self.target}
                text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                samples[f"{sample.name}{{{text}}}"] = sample.value
        return samples


class Replica(Process):
    """An agent replica of one version: turns, model calls, context use, session ends."""

    def __init__(self, version: str = "v1", instance: str = "10.0.0.1:8081") -> None:
        super().__init__(job="agent", instance=instance)
        self.agent_metrics = AgentMetrics(self.registry, version=version)
        self.model_metrics = ModelMetrics(self.registry, version=version)

    def turns(self, **by_status: int) -> None:
        """Turns by status: ``turns(ok=76, model_unavailable=4)``."""
        for status, n in by_status.items():
            self.agent_metrics.turns_for(AGENT, status).inc(n)

    def model_calls(self, ok: int = 0, **failed_by_kind: int) -> None:
        """Successful calls to the provider, and failed attempts by kind (``timeout=3``)."""
        for _ in range(ok):
            self.model_metrics.duration_for(PROVIDER, MODEL).observe(0.8)
        for kind, n in failed_by_kind.items():
            self.model_metrics.errors_for(PROVIDER, MODEL, kind).inc(n)

    def context(self, calls: Mapping[float, int]) -> None:
        """Model calls by context utilization: ``context({0.4: 14, 1.0: 6})``."""
        for utilization, n in calls.items():
            for _ in range(n):
                self.agent_metrics.context_utilization_calls_for(AGENT).observe(utilization)

    def sessions_ended(self, lengths: Mapping[float, int]) -> None:
        """Sessions that ended, by length in seconds: ``sessions_ended({300: 2})``."""
        for seconds, n in lengths.items():
            for _ in range(n):
                self.agent_metrics.session_duration.labels(AGENT).observe(seconds)


class MemoryServer(Process):
    """A memory server: operations by name and their duration."""

    def __init__(self, instance: str = "10.0.0.9:8788") -> None:
        super().__init__(job="memory", instance=instance)
        self.metrics = MemoryMetrics(self.registry)
        self.metrics.memories.set(1200)

    def operations(self, operation: str, latencies: Mapping[float, int]) -> None:
        """Operations by duration in seconds: ``operations("search_memory", {0.05: 30})``."""
        for seconds, n in latencies.items():
            for _ in range(n):
                self.metrics.operations.labels(operation, "ok").inc()
                self.metrics.duration.labels(operation).observe(seconds)


Traffic = Callable[[int], None]
"""What happens during one scrape interval, given its number."""


def steady(*actions: Callable[[], None]) -> Traffic:
    """The same actions in every interval."""

    def traffic(_: int) -> None:
        for action in actions:
            action()

    return traffic


def at_steps(steps: Callable[[int], bool], *actions: Callable[[], None]) -> Traffic:
    """The actions only in the intervals ``steps`` picks."""
    every = steady(*actions)
    return lambda step: every(step) if steps(step) else None


def run(processes: Sequence[Process], steps: int, *traffic: Traffic) -> Series:
    """Run each ``traffic`` then scrape every process, ``steps`` times."""
    series: Series = {}
    for step in range(steps):
        for happen in traffic:
            happen(step)
        for process in processes:
            for key, value in process.scrape().items():
                series.setdefault(key, [None] * step).append(value)
    return series


# -- cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    """One alert that must be firing: its grouping labels and its value."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class AlertCase:
    alert: str
    name: str
    interval_s: int
    series: Series
    fired: tuple[Fired, ...] = ()
    signal_zero: tuple[Mapping[str, str], ...] = ()
    """Groups whose signal must read exactly 0 (active, no bad event yet)."""
    silent_alerts: tuple[str, ...] = ()
    """Other alerts that must not fire either."""

    @property
    def steps(self) -> int:
        return len(next(iter(self.series.values())))

    @property
    def eval_s(self) -> int:
        return (self.steps - 1) * self.interval_s

    @property
    def id(self) -> str:
        return f"{self.alert}: {self.name}"


def _steps(window: str, for_: str, interval_s: int) -> int:
    """Scrapes enough for the window to fill and the condition to hold ``for`` long."""
    return math.ceil((duration_seconds(window) + duration_seconds(for_)) / interval_s) + 4


def _per_interval(rps: float, interval_s: int, *, at_least: int) -> int:
    return max(at_least, math.ceil(rps * interval_s))


def _sparse(min_rps: float, interval_s: int) -> int:
    """An interval count between two events that keeps the rate under half ``min_rps``."""
    return math.ceil(2 / (max(min_rps, 1e-3) * interval_s))


def _bounds(family: str, process: Process) -> list[float]:
    """The finite bucket bounds of a histogram family, as the registry exports them
    (``process`` has observed into it once)."""
    bounds = {
        float(sample.labels["le"])
        for metric in process.registry.collect()
        for sample in metric.samples
        if sample.name == f"{family}_bucket"
    }
    return sorted(b for b in bounds if math.isfinite(b))


def _probe(record: Callable[[Replica], None]) -> Replica:
    replica = Replica()
    record(replica)
    return replica


def _memory_probe() -> MemoryServer:
    server = MemoryServer()
    server.operations("get_memory", {0.001: 1})
    return server


def above(threshold: float, bounds: Sequence[float]) -> float:
    """A value whose whole bucket lies above ``threshold``, so any quantile that falls
    in it is above the threshold too."""
    lower = min(b for b in bounds if b > threshold)
    higher = [b for b in bounds if b > lower]
    return higher[0] if higher else lower * 2


def below(threshold: float, bounds: Sequence[float]) -> float:
    """A bucket bound well under ``threshold`` (a quarter of it, or the first bound)."""
    under = [b for b in bounds if b <= threshold / 4]
    return under[-1] if under else bounds[0]


def _off_whole_seconds(value: float) -> float:
    assert abs(value - round(value)) > 0.01, f"{value} s: choose other counts"
    return value


def histogram_quantile(
    q: float, observations: Mapping[float, int], bounds: Sequence[float]
) -> float:
    """What Prometheus' ``histogram_quantile`` gives for this mix of observations: the
    bucket that holds the rank, interpolated linearly (the +Inf bucket gives the highest
    finite bound)."""
    total = sum(observations.values())
    cumulative = [sum(n for v, n in observations.items() if v <= b) for b in bounds]
    rank = q * total
    index = next((i for i, count in enumerate(cumulative) if count >= rank), None)
    if index is None:
        return bounds[-1]
    lower = bounds[index - 1] if index > 0 else 0.0
    under = cumulative[index - 1] if index > 0 else 0
    return lower + (bounds[index] - lower) * (rank - under) / (cumulative[index] - under)


def error_rate_cases(settings: AlertSettings) -> Iterator[AlertCase]:
    alert = settings.error_rate
    steps = _steps(settings.window_of(alert), alert.for_duration, FAST_INTERVAL_S)
    turns = _per_interval(
        4 * alert.min_rps, FAST_INTERVAL_S, at_least=math.ceil(4 / alert.threshold)
    )
    bad = min(turns, math.ceil(turns * 2 * alert.threshold))
    fair = math.floor(turns * alert.threshold / 2)
    sparse = _sparse(alert.min_rps, FAST_INTERVAL_S)
    v1 = {"agent": AGENT, "version": "v1"}

    def case(name: str, series: Series, **expected: Any) -> AlertCase:
        return AlertCase(ERROR_RATE, name, FAST_INTERVAL_S, series, **expected)

    r = Replica()
    yield case(
        f"fires when {bad} of {turns} turns an interval fail with model_unavailable",
        run([r], steps, steady(lambda: r.turns(ok=turns - bad, model_unavailable=bad))),
        fired=(Fired(v1, bad / turns),),
    )
    r = Replica()
    yield case(
        f"silent at {fair} failed turns of {turns}",
        run([r], steps, steady(lambda: r.turns(ok=turns - fair, agent_error=fair))),
    )
    r = Replica()
    yield case(
        "reads 0 for a busy service without a failed turn",
        run([r], steps, steady(lambda: r.turns(ok=turns))),
        signal_zero=(v1,),
    )
    r = Replica()
    # Failures long ago, then no traffic at all: 0 of 0 must not fire.
    yield case(
        "silent for a quiet service with no traffic",
        run([r], steps, at_steps(lambda step: step == 0, lambda: r.turns(ok=50, agent_error=50))),
    )
    r = Replica()
    yield case(
        f"silent when every turn fails but one comes only every {sparse * FAST_INTERVAL_S} s",
        run(
            [r],
            steps,
            at_steps(lambda step: step % sparse == 0, lambda: r.turns(model_unavailable=1)),
        ),
    )
    # As many refusals as successful turns, spread over (up to) three ignored statuses.
    refused = alert.ignored_statuses[:3]
    if refused:
        r = Replica()
        yield case(
            f"silent when half the turns are refused with {', '.join(refused)}",
            run(
                [r],
                steps,
                steady(
                    lambda: r.turns(
                        ok=turns, **{status: turns // len(refused) for status in refused}
                    )
                ),
            ),
        )
    stable, canary = Replica("v1", "10.0.0.1:8081"), Replica("v2", "10.0.0.2:8081")
    yield case(
        "a canary-only spike fires for the canary's version only",
        run(
            [stable, canary],
            steps,
            steady(
                lambda: stable.turns(ok=turns * 19),
                lambda: canary.turns(ok=turns - bad, agent_error=bad),
            ),
        ),
        fired=(Fired({"agent": AGENT, "version": "v2"}, bad / turns),),
    )


def context_cases(settings: AlertSettings) -> Iterator[AlertCase]:
    alert = settings.context_exhaustion
    steps = _steps(settings.window_of(alert), alert.for_duration, FAST_INTERVAL_S)
    calls = _per_interval(4 * alert.min_rps, FAST_INTERVAL_S, at_least=20)
    bounds = _bounds("agent_model_context_utilization_ratio", _probe(lambda r: r.context({0.5: 1})))
    full, fair = above(alert.threshold, bounds), below(alert.threshold, bounds)
    heavy = math.ceil(calls * 0.3)
    mix = {fair: calls - heavy, full: heavy}
    value = histogram_quantile(settings.quantile, mix, bounds)
    sparse = _sparse(alert.min_rps, FAST_INTERVAL_S)
    v1 = {"agent": AGENT, "version": "v1"}

    def case(name: str, series: Series, **expected: Any) -> AlertCase:
        return AlertCase(CONTEXT_EXHAUSTION, name, FAST_INTERVAL_S, series, **expected)

    r = Replica()
    yield case(
        f"fires when {heavy} of {calls} calls an interval use {full:.0%} of the window",
        run([r], steps, steady(lambda: r.turns(ok=calls), lambda: r.context(mix))),
        fired=(Fired(v1, value),),
    )
    r = Replica()
    yield case(
        f"silent when every call uses {fair:.0%}",
        run([r], steps, steady(lambda: r.turns(ok=calls), lambda: r.context({fair: calls}))),
    )
    r = Replica()
    yield case(
        "reads 0 for turns that make no model call",
        run([r], steps, steady(lambda: r.turns(ok=calls))),
        signal_zero=(v1,),
    )
    r = Replica()
    yield case(
        "silent for a quiet service with no traffic",
        run([r], steps, at_steps(lambda step: step == 0, lambda: r.context({full: 30}))),
    )
    r = Replica()
    yield case(
        f"silent for one long conversation: a full call every {sparse * FAST_INTERVAL_S} s",
        run([r], steps, at_steps(lambda step: step % sparse == 0, lambda: r.context({full: 1}))),
    )
    stable, canary = Replica("v1", "10.0.0.1:8081"), Replica("v2", "10.0.0.2:8081")
    yield case(
        "a canary-only exhaustion fires for the canary's version only",
        run(
            [stable, canary],
            steps,
            steady(lambda: stable.context({fair: calls * 10}), lambda: canary.context(mix)),
        ),
        fired=(Fired({"agent": AGENT, "version": "v2"}, value),),
    )


def memory_latency_cases(settings: AlertSettings) -> Iterator[AlertCase]:
    alert = settings.memory_latency
    steps = _steps(settings.window_of(alert), alert.for_duration, FAST_INTERVAL_S)
    ops = _per_interval(4 * alert.min_rps, FAST_INTERVAL_S, at_least=40)
    bounds = _bounds("agent_memory_operation_duration_seconds", _memory_probe())
    slow, fast = above(alert.threshold_s, bounds), below(alert.threshold_s, bounds)
    slowed = math.ceil(ops * 0.2)
    mix = {fast: ops - slowed, slow: slowed}
    value = histogram_quantile(settings.quantile, mix, bounds)
    slowest = bounds[-1]
    sparse = _sparse(alert.min_rps, FAST_INTERVAL_S)

    def case(name: str, series: Series, **expected: Any) -> AlertCase:
        return AlertCase(MEMORY_LATENCY, name, FAST_INTERVAL_S, series, **expected)

    m = MemoryServer()
    yield case(
        f"fires when {slowed} of {ops} operations an interval take {slow:g} s",
        run([m], steps, steady(lambda: m.operations("search_memory", mix))),
        fired=(Fired(m.target, value),),
    )
    m = MemoryServer()
    yield case(
        f"silent when every operation takes {fast:g} s",
        run(
            [m],
            steps,
            steady(
                lambda: m.operations("search_memory", {fast: ops // 2}),
                lambda: m.operations("create_memory", {fast: ops // 2}),
            ),
        ),
    )
    m = MemoryServer()
    yield case(
        f"silent for a single request of {slowest:g} s among {ops} an interval",
        run(
            [m],
            steps,
            steady(lambda: m.operations("get_memory", {fast: ops})),
            at_steps(
                lambda step: step == steps // 2,
                lambda: m.operations("search_memory", {slowest: 1}),
            ),
        ),
    )
    m = MemoryServer()
    yield case(
        "silent for a single request, however slow, and no other",
        run(
            [m],
            steps,
            at_steps(lambda step: step == 0, lambda: m.operations("search_memory", {fast: 1})),
            at_steps(
                lambda step: step == steps // 2,
                lambda: m.operations("search_memory", {slowest: 1}),
            ),
        ),
    )
    m = MemoryServer()
    yield case(
        f"silent when a slow request comes only every {sparse * FAST_INTERVAL_S} s",
        run(
            [m],
            steps,
            at_steps(
                lambda step: step % sparse == 0,
                lambda: m.operations("search_memory", {slowest: 1}),
            ),
        ),
    )
    m = MemoryServer()
    yield case(
        "silent for a quiet memory server after slow operations",
        run(
            [m], steps, at_steps(lambda step: step == 0, lambda: m.operations("search_memory", mix))
        ),
    )
    m = MemoryServer()
    yield case(
        "reads 0 for a memory server that no agent calls",
        run([m], steps),
        signal_zero=(m.target,),
    )
    m = MemoryServer()
    yield case(
        "silent while snapshots and verifies take minutes",
        run(
            [m],
            steps,
            steady(
                lambda: m.operations("search_memory", {fast: ops}),
                lambda: m.operations("create_snapshot", {slowest: ops}),
                lambda: m.operations("verify_snapshot", {slowest: ops}),
            ),
        ),
    )
    healthy, degraded = MemoryServer("10.0.0.9:8788"), MemoryServer("10.0.0.10:8788")
    yield case(
        "one slow memory server of two fires for that instance only",
        run(
            [healthy, degraded],
            steps,
            steady(
                lambda: healthy.operations("search_memory", {fast: ops}),
                lambda: degraded.operations("search_memory", mix),
            ),
        ),
        fired=(Fired(degraded.target, value),),
    )


def model_timeout_cases(settings: AlertSettings) -> Iterator[AlertCase]:
    alert = settings.model_timeouts
    steps = _steps(settings.window_of(alert), alert.for_duration, FAST_INTERVAL_S)
    attempts = _per_interval(
        4 * alert.min_rps, FAST_INTERVAL_S, at_least=math.ceil(4 / alert.threshold)
    )
    bad = min(attempts, math.ceil(attempts * 2 * alert.threshold))
    fair = math.floor(attempts * alert.threshold / 2)
    sparse = _sparse(alert.min_rps, FAST_INTERVAL_S)
    v1 = {"provider": PROVIDER, "version": "v1"}

    def case(name: str, series: Series, **expected: Any) -> AlertCase:
        return AlertCase(MODEL_TIMEOUTS, name, FAST_INTERVAL_S, series, **expected)

    r = Replica()
    yield case(
        f"fires when {bad} of {attempts} attempts an interval time out",
        run([r], steps, steady(lambda: r.model_calls(ok=attempts - bad, timeout=bad))),
        fired=(Fired(v1, bad / attempts),),
    )
    r = Replica()
    yield case(
        "fires when every attempt times out (no successful call at all)",
        run([r], steps, steady(lambda: r.model_calls(timeout=attempts))),
        fired=(Fired(v1, 1.0),),
    )
    r = Replica()
    yield case(
        f"silent at {fair} timeouts of {attempts}, however many other errors",
        run(
            [r],
            steps,
            steady(
                lambda: r.model_calls(
                    ok=attempts - fair, timeout=fair, rate_limited=attempts // 2, server=3
                )
            ),
        ),
    )
    r = Replica()
    yield case(
        "reads 0 for a provider that answers every call",
        run([r], steps, steady(lambda: r.model_calls(ok=attempts))),
        signal_zero=(v1,),
    )
    r = Replica()
    yield case(
        "silent for a quiet service with no traffic",
        run([r], steps, at_steps(lambda step: step == 0, lambda: r.model_calls(ok=5, timeout=50))),
    )
    r = Replica()
    yield case(
        f"silent when a lone attempt every {sparse * FAST_INTERVAL_S} s times out",
        run(
            [r],
            steps,
            at_steps(lambda step: step % sparse == 0, lambda: r.model_calls(timeout=1)),
        ),
    )
    stable, canary = Replica("v1", "10.0.0.1:8081"), Replica("v2", "10.0.0.2:8081")
    yield case(
        "a canary-only increase fires for the canary's version only",
        run(
            [stable, canary],
            steps,
            steady(
                lambda: stable.model_calls(ok=attempts * 10),
                lambda: canary.model_calls(ok=attempts - bad, timeout=bad),
            ),
        ),
        fired=(Fired({"provider": PROVIDER, "version": "v2"}, bad / attempts),),
    )


def session_duration_cases(settings: AlertSettings) -> Iterator[AlertCase]:
    alert = settings.session_duration
    steps = _steps(settings.window_of(alert), alert.for_duration, SESSION_INTERVAL_S)
    ends = _per_interval(4 * alert.min_rps, SESSION_INTERVAL_S, at_least=2)
    bounds = _bounds("agent_session_duration_seconds", _probe(lambda r: r.sessions_ended({1.0: 1})))
    long, usual = above(alert.threshold_s, bounds), below(alert.threshold_s, bounds)
    # Odd counts keep the quantile off whole seconds, where humanizeDuration's rounding
    # down would turn float noise (20159.999…) into a different text.
    mix = {usual: ends, long: ends + 5}
    value = _off_whole_seconds(histogram_quantile(settings.quantile, mix, bounds))
    longest = bounds[-1]
    agent = {"agent": AGENT}

    def case(name: str, series: Series, **expected: Any) -> AlertCase:
        return AlertCase(SESSION_DURATION, name, SESSION_INTERVAL_S, series, **expected)

    r = Replica()
    yield case(
        f"fires when {ends + 5} of the {2 * ends + 5} sessions ending a minute lasted {long:g} s",
        run([r], steps, steady(lambda: r.turns(ok=20), lambda: r.sessions_ended(mix))),
        fired=(Fired(agent, value),),
    )
    r = Replica()
    yield case(
        f"silent when sessions last {usual:g} s",
        run([r], steps, steady(lambda: r.turns(ok=20), lambda: r.sessions_ended({usual: ends}))),
    )
    r = Replica()
    yield case(
        "reads 0 while sessions run and none has ended yet",
        run([r], steps, steady(lambda: r.turns(ok=20))),
        signal_zero=(agent,),
    )
    r = Replica()
    yield case(
        "silent for a quiet service with no traffic",
        run([r], steps, at_steps(lambda step: step == 0, lambda: r.sessions_ended({long: 20}))),
    )
    r = Replica()
    yield case(
        f"silent for a single session of {longest:g} s among many",
        run(
            [r],
            steps,
            steady(lambda: r.sessions_ended({usual: ends})),
            at_steps(lambda step: step == steps // 2, lambda: r.sessions_ended({longest: 1})),
        ),
    )
    r = Replica()
    yield case(
        "silent for a single long session and no other",
        run(
            [r],
            steps,
            at_steps(lambda step: step == 0, lambda: r.sessions_ended({usual: 1})),
            at_steps(lambda step: step == steps // 2, lambda: r.sessions_ended({longest: 1})),
        ),
    )


def healthy_stack_case(settings: AlertSettings) -> AlertCase:
    """Healthy traffic on every family at once, for as long as the slowest alert needs:
    none of the five fires."""
    alerts = (
        settings.error_rate,
        settings.context_exhaustion,
        settings.memory_latency,
        settings.model_timeouts,
        settings.session_duration,
    )
    steps = max(_steps(settings.window_of(a), a.for_duration, FAST_INTERVAL_S) for a in alerts)
    utilization = below(
        settings.context_exhaustion.threshold,
        _bounds("agent_model_context_utilization_ratio", _probe(lambda r: r.context({0.5: 1}))),
    )
    latency = below(
        settings.memory_latency.threshold_s,
        _bounds("agent_memory_operation_duration_seconds", _memory_probe()),
    )
    length = below(
        settings.session_duration.threshold_s,
        _bounds("agent_session_duration_seconds", _probe(lambda r: r.sessions_ended({1.0: 1}))),
    )
    r, m = Replica(), MemoryServer()
    return AlertCase(
        ERROR_RATE,
        "a healthy stack fires none of the five",
        FAST_INTERVAL_S,
        run(
            [r, m],
            steps,
            steady(
                lambda: r.turns(ok=100, rate_limited=5, agent_error=1),
                lambda: r.model_calls(ok=100, server=1, timeout=1),
                lambda: r.context({utilization: 100}),
                lambda: m.operations("search_memory", {latency: 50}),
            ),
            at_steps(lambda step: step % 2 == 0, lambda: r.sessions_ended({length: 1})),
        ),
        silent_alerts=(CONTEXT_EXHAUSTION, MEMORY_LATENCY, MODEL_TIMEOUTS, SESSION_DURATION),
    )


def all_cases(settings: AlertSettings) -> list[AlertCase]:
    return [
        *error_rate_cases(settings),
        *context_cases(settings),
        *memory_latency_cases(settings),
        *model_timeout_cases(settings),
        *session_duration_cases(settings),
        healthy_stack_case(settings),
    ]
