"""In-process test doubles of what the rollout controller drives.

- ``TableRouter``: the router's routing table in memory (RouterControl).
- ``RecordingDriver``: replicas that start and stop at once, every call recorded (ReplicaDriver).
- ``FedMetrics``: windows the test sets; can insist that two reads overlap (MetricsSource).
- ``ScriptedJudge``: verdicts from a script, one per analysis.
- ``RecordingRollback``, ``RecordingMemory``, ``FixedGolden``: record what they were asked.
- ``GatedClock``: a manual clock whose sleeps the test can hold, so it can act between ticks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentkeel.deploy.state import Release
from agentkeel.deploy.types import (
    ReplicaInfo,
    ReplicaSpec,
    RouterReplica,
    RouterVersion,
    SessionPolicy,
    VersionWindow,
)
from agentkeel.errors import Conflict, NotFound, Unavailable
from agentkeel.resilience.clock import ManualClock


@dataclass
class _Version:
    weight: int
    policy: SessionPolicy
    retired: bool = False
    replicas: list[str] = field(default_factory=list)


class TableRouter:
    """The routing table in memory; ``pins`` is what the test says is live per version."""

    def __init__(self, *, stable: str = "v1", replicas: Sequence[str] = ()) -> None:
        self.stable: str | None = stable
        self.table: dict[str, _Version] = {stable: _Version(100, "pinned", replicas=list(replicas))}
        self.pins: dict[str, int] = {}
        self.drained: set[str] = set()
        self.calls: list[tuple[str, Any]] = []
        self.weight_history: list[dict[str, int]] = []
        self.on_call: Callable[[str, Any], None] | None = None
        self.down = False

    def _record(self, name: str, args: Any) -> None:
        if self.down:
            raise Unavailable("router admin API down (test)", code="router_unavailable")
        self.calls.append((name, args))
        if self.on_call is not None:
            self.on_call(name, args)

    def weights(self) -> dict[str, int]:
        return {name: v.weight for name, v in self.table.items()}

    async def versions(self) -> tuple[str | None, list[RouterVersion]]:
        self._record("versions", None)
        return self.stable, [
            RouterVersion(
                version=name,
                weight=v.weight,
                policy=v.policy,
                retired=v.retired,
                replicas=tuple(
                    RouterReplica(url=u, version=name, ready=True, draining=u in self.drained)
                    for u in v.replicas
                ),
                pinned_sessions=self.pins.get(name, 0),
            )
            for name, v in self.table.items()
        ]

    async def put_version(
        self,
        version: str,
        *,
        replicas: Sequence[str] = (),
        weight: int = 0,
        policy: SessionPolicy = "pinned",
    ) -> None:
        self._record("put_version", (version, tuple(replicas), weight, policy))
        entry = self.table.setdefault(version, _Version(weight, policy))
        entry.weight, entry.policy = weight, policy
        entry.replicas.extend(url for url in replicas if url not in entry.replicas)

    async def set_weights(self, weights: Mapping[str, int], *, stable: str | None = None) -> None:
        self._record("set_weights", (dict(weights), stable))
        unknown = set(weights) - set(self.table)
        if unknown:
            raise NotFound(f"unknown versions {sorted(unknown)}")
        for name, weight in weights.items():
            entry = self.table[name]
            # As the router: a weight above 0 brings a retired version back.
            entry.weight, entry.retired = weight, entry.retired and weight == 0
        if stable is not None:
            self.stable = stable
        self.weight_history.append(self.weights())

    async def retire_version(self, version: str, *, policy: SessionPolicy | None = None) -> None:
        self._record("retire_version", (version, policy))
        entry = self.table[version]
        if version == self.stable:
            raise Conflict(f"{version} is the stable version; make another one stable first")
        entry.retired, entry.weight = True, 0
        if policy is not None:
            entry.policy = policy

    async def remove_version(self, version: str) -> None:
        self._record("remove_version", version)
        self.table.pop(version, None)
        self.pins.pop(version, None)

    async def add_replica(self, version: str, url: str) -> None:
        self._record("add_replica", (version, url))
        self.table[version].replicas.append(url)

    async def remove_replica(self, url: str) -> None:
        self._record("remove_replica", url)
        for entry in self.table.values():
            if url in entry.replicas:
                entry.replicas.remove(url)

    async def drain_replica(self, url: str) -> None:
        self._record("drain_replica", url)
        self.drained.add(url)

    async def pin_stats(self) -> dict[str, int]:
        self._record("pin_stats", None)
        return {name: count for name, count in self.pins.items() if name in self.table}


class RecordingDriver:
    """Replicas that are ready as soon as they are asked for."""

    def __init__(self, *, existing: Sequence[tuple[str, str]] = ()) -> None:
        self.replicas: dict[str, ReplicaInfo] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail_start: str | None = None
        self._port = 9100
        for version, url in existing:
            self._add(version, url)

    def _add(self, version: str, url: str) -> ReplicaInfo:
        name = f"replica-{version}-{len(self.replicas) + 1}"
        info = ReplicaInfo(name=name, version=version, url=url, state="ready")
        self.replicas[name] = info
        return info

    def live(self, version: str) -> list[ReplicaInfo]:
        return [r for r in self.replicas.values() if r.version == version and r.state == "ready"]

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        self.calls.append(("start", (spec, count)))
        if self.fail_start:
            raise Unavailable(self.fail_start, code="replica_failed")
        started = []
        for _ in range(count):
            self._port += 1
            started.append(self._add(spec.version, f"http://127.0.0.1:{self._port}"))
        return started

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        self.calls.append(("stop", (name, drain)))
        info = self.replicas[name]
        self.replicas[name] = ReplicaInfo(
            name=info.name, version=info.version, url=info.url, state="stopped"
        )

    async def list_replicas(self) -> list[ReplicaInfo]:
        return list(self.replicas.values())


class FedMetrics:
    """Windows the test sets. With ``overlap_required`` a read waits (briefly) for a second
    read to start, so reads made one after the other fail the test."""

    def __init__(self, *, overlap_required: bool = False) -> None:
        self.windows: dict[str, VersionWindow] = {}
        self.reads: list[str] = []
        self.started = 0
        self.overlap_required = overlap_required
        self.overlaps = 0
        self._in_flight = 0
        self._second = asyncio.Event()

    async def start(self) -> None:
        self.started += 1

    async def read(self, version: str) -> VersionWindow:
        self.reads.append(version)
        self._in_flight += 1
        if self._in_flight >= 2:
            self.overlaps += 1
            self._second.set()
        if self.overlap_required:
            await asyncio.wait_for(self._second.wait(), timeout=2.0)
        await asyncio.sleep(0)
        self._in_flight -= 1
        if self._in_flight == 0:
            self._second = asyncio.Event()
        return self.windows.get(version) or VersionWindow(version, rates={}, distributions={})


@dataclass(frozen=True)
class MetricResult:
    name: str
    outcome: str
    stable: float
    canary: float
    p_value: float
    detail: str


@dataclass(frozen=True)
class ScriptedVerdict:
    outcome: str
    rollback: bool
    metrics: tuple[MetricResult, ...]


class ScriptedJudge:
    """Verdicts in script order (the last one repeats); every call recorded."""

    def __init__(self, script: Sequence[str]) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, str]] = []

    def evaluate(self, stable: VersionWindow, canary: VersionWindow) -> ScriptedVerdict:
        self.calls.append((stable.version, canary.version))
        outcome = self.script[min(len(self.calls), len(self.script)) - 1]
        rollback = outcome == "fail-rollback"
        outcome = "fail" if rollback else outcome
        metric = MetricResult(
            name="tool_success",
            outcome=outcome,
            stable=0.95,
            canary=0.95 if outcome == "pass" else 0.90,
            p_value=0.5 if outcome == "pass" else 0.001,
            detail=f"scripted {outcome}",
        )
        return ScriptedVerdict(outcome=outcome, rollback=rollback, metrics=(metric,))


class RecordingRollback:
    def __init__(self, *, router: TableRouter | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.weights_when_called: list[dict[str, int]] = []
        self._router = router

    async def run(
        self,
        release: Release,
        *,
        code_only: bool = False,
        dry_run: bool = False,
        on_step: Callable[..., Any] | None = None,
    ) -> dict[str, Any]:
        self.calls.append((release.release, code_only))
        if self._router is not None:
            self.weights_when_called.append(self._router.weights())
        if on_step is not None:
            on_step("route_new_sessions_to_previous", "done")
        return {"steps": ["route_new_sessions_to_previous"], "code_only": code_only}


class RecordingMemory:
    def __init__(self) -> None:
        self.snapshots: list[dict[str, str]] = []

    async def create_snapshot(self, *, label: str = "", kind: str = "manual") -> dict[str, Any]:
        snapshot = {"id": f"snap-{len(self.snapshots) + 1}", "label": label, "kind": kind}
        self.snapshots.append(snapshot)
        return snapshot


@dataclass(frozen=True)
class GoldenOutcome:
    passed: bool
    summary: str


class FixedGolden:
    def __init__(self, *, passed: bool) -> None:
        self.passed = passed
        self.targets: list[str] = []

    async def run(self, target: str) -> GoldenOutcome:
        self.targets.append(target)
        return GoldenOutcome(passed=self.passed, summary="3/3 passed" if self.passed else "1/3")


class GatedClock(ManualClock):
    """A manual clock; while ``hold()`` is on, every sleep waits until ``release()``."""

    def __init__(self) -> None:
        super().__init__(start=0.0)
        self._open = asyncio.Event()
        self._open.set()
        self.sleeping = asyncio.Event()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def sleep(self, seconds: float) -> None:
        if not self._open.is_set():
            self.sleeping.set()
            await self._open.wait()
            self.sleeping.clear()
        await super().sleep(seconds)


@dataclass
class Rig:
    """A stack of doubles around one rollout store."""

    store: Any
    router: TableRouter
    driver: RecordingDriver
    metrics: FedMetrics
    judge: ScriptedJudge
    rollback: RecordingRollback
    memory: RecordingMemory
    clock: GatedClock
    settings: Any
    golden: FixedGolden | None = None
    sessions: Any = None
    updates: list[tuple[str, str, int, float]] = field(default_factory=list)

    def deps(self) -> Any:
        from agentkeel.deploy.strategies import RolloutDeps

        return RolloutDeps(
            router=self.router,
            driver=self.driver,
            rollback=self.rollback,
            memory=self.memory,
            metrics=self.metrics,
            judge_factory=lambda: self.judge,
            golden=self.golden,
            sessions=self.sessions,
        )

    def controller(self, **kwargs: Any) -> Any:
        from agentkeel.deploy.controller import RolloutController

        def seen(release: Release) -> None:
            self.updates.append((release.state, release.phase, release.step, release.elapsed_s))

        return RolloutController(
            store=self.store,
            deps=self.deps(),
            settings=self.settings,
            clock=self.clock,
            on_update=seen,
            **kwargs,
        )


async def until(condition: Callable[[], bool], *, ticks: int = 100_000, pause_s: float = 0) -> None:
    """Yield to the event loop until ``condition()`` holds (at most ``ticks`` times)."""
    for _ in range(ticks):
        if condition():
            return
        await asyncio.sleep(pause_s)
    raise AssertionError("condition never held")
