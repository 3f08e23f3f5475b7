"""The rehearsals: each starts its own ``keel up``, puts live sessions on it and releases.

Every scenario returns its figures and the verifier's verdict; ``run`` of
``__main__`` prints them. The durations are rollout time divided by the time
scale (``--time-scale``), so the whole canary runs in a couple of minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._common import Figure
from bench.rehearsal.load import LoadDriver, LoadRecord
from bench.rehearsal.stack import Stack, keel_up, stack_env
from bench.rehearsal.verify import Verdict, verify
from bench.rehearsal.watch import Watcher

STABLE = "examples.rehearsal_agent:stable"
WORSE = "examples.rehearsal_agent:worse"


@dataclass
class Options:
    sessions: int = 200  # bluegreen: 100 unless given
    time_scale: float = 30.0
    turns: tuple[int, int] = (6, 12)
    think_s: tuple[float, float] = (0.5, 1.5)
    warmup_s: float = 5.0
    healthy_canary: bool = True  # canary: also promote a healthy v2 after the rollback


@dataclass
class Outcome:
    """One scenario's result: figures to print and the verdicts of its phases."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skew: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts.values()) and not self.notes

    def add_phase(self, phase: str, verdict: Verdict, record: LoadRecord) -> None:
        self.verdicts[phase] = verdict
        self.figures += [
            Figure(f"{phase}: failed turns", len(record.failures), "turns"),
            Figure(f"{phase}: acknowledged turns", len(record.acks), "turns"),
            Figure(f"{phase}: sessions checked", verdict.sessions_checked, "sessions"),
            Figure(
                f"{phase}: acknowledged turns missing",
                len(verdict.missing_turns) + len(verdict.wrong_version),
                "turns",
            ),
            Figure(
                f"{phase}: sessions on >2 version runs",
                len(verdict.bad_sequences),
                "sessions",
            ),
            Figure(
                f"{phase}: moves at a turn boundary",
                verdict.moves,
                "sessions",
                ", ".join(f"{k}: {v}" for k, v in verdict.moves_by_path.items()),
            ),
            Figure(f"{phase}: retried turns (503)", record.retries, "retries"),
        ]


def _canary_section(options: Options) -> str:
    # Two steps of 30 rollout-minutes each, judged every rollout-minute.
    return (
        "  canary:\n"
        "    steps: [{weight: 25, duration_s: 1800}, {weight: 50, duration_s: 1800}]\n"
        "    drain_deadline_s: 600\n"
        "  bluegreen: {drain_deadline_s: 600, switch_back_window_s: 3600}\n"
        "  rolling: {drain_deadline_s: 300}\n"
        "  analysis_interval_s: 60\n"
        "  poll_interval_s: 0.1\n"
    )


def _abort_requested_at(stack: Stack) -> float | None:
    """When the abort request was written to the rollout store, on the monotonic clock."""
    with contextlib.closing(sqlite3.connect(stack.data_dir / "rollouts.db")) as db:
        row = db.execute(
            "SELECT max(requested_at) FROM rollout_requests WHERE command = 'abort'"
        ).fetchone()
    if row is None or row[0] is None:
        return None
    return float(row[0]) - (time.time() - time.monotonic())


async def rollout(stack: Stack, *args: str) -> tuple[int, dict[str, Any]]:
    """``keel rollout start ... --json`` to the end: exit code and the release it printed."""
    proc = await stack.keel_async("rollout", "start", "--json", *args)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    try:
        release: dict[str, Any] = json.loads(text[text.index("{") :])
    except ValueError:
        release = {"raw": text[-2000:]}
    return int(proc.returncode or 0), release


async def _with_load(
    stack: Stack,
    options: Options,
    action: Callable[[LoadDriver, Watcher], Awaitable[None]],
    *,
    settle_s: float = 5.0,
) -> tuple[LoadRecord, Verdict, Watcher]:
    """Live sessions while ``action`` runs, a settle time, then the verdict."""
    driver = LoadDriver(
        stack.router_url, sessions=options.sessions, turns=options.turns, think_s=options.think_s
    )
    await driver.start()
    try:
        async with Watcher(stack.router_url, stack.admin_headers(), driver.live_by_version) as w:
            await asyncio.sleep(options.warmup_s)
            await action(driver, w)
            await asyncio.sleep(settle_s)
    finally:
        record = await driver.stop()
    verdict = await verify(stack.router_url, record)
    verdict.failed_turns = [
        f"{f.session_id} turn {f.turn} at t+{f.at - record.started:.1f}s: {f.reason}"
        for f in record.failures
    ]
    if record.failures:
        router_log = (stack.data_dir / "logs" / "router.log").read_text(errors="replace")
        verdict.failed_turns += [
            line[:300] for line in router_log.splitlines() if '"level": "info"' not in line
        ][-8:]
    return record, verdict, w


async def canary(options: Options) -> Outcome:
    """v2 = worse is rolled back by the judge; then v2 = stable is promoted."""
    outcome = Outcome("canary")
    scale = str(options.time_scale)
    with keel_up(replicas=3, rollout=_canary_section(options)) as stack:
        timings: dict[str, float] = {}

        async def worse(driver: LoadDriver, watch: Watcher) -> None:
            timings["start"] = time.monotonic()
            code, release = await rollout(
                stack, "--version", "v2", "--entrypoint", WORSE, "--replicas", "1",
                "--time-scale", scale, "--policy", "move-at-turn",
            )  # fmt: skip
            timings["end"] = time.monotonic()
            outcome.notes += _expect(release, code, "rolled_back", "worse v2")

        record, verdict, watch = await _with_load(stack, options, worse)
        outcome.add_phase("worse v2", verdict, record)
        first = record.first_ack("v2")
        back = watch.first(lambda s: s.weights.get("v2", 0) == 0, after=first or timings["start"])
        if first is not None and back is not None:
            outcome.figures.append(
                Figure(
                    "worse v2: time to rollback",
                    back - first,
                    "s",
                    f"first v2 turn to v2 weight 0 (time scale {scale})",
                )
            )
        outcome.figures.append(
            Figure("worse v2: rollout wall time", timings["end"] - timings["start"], "s")
        )

        if not options.healthy_canary:
            return outcome

        async def healthy(driver: LoadDriver, watch: Watcher) -> None:
            timings["start2"] = time.monotonic()
            code, release = await rollout(
                stack, "--version", "v2", "--entrypoint", STABLE, "--replicas", "1",
                "--time-scale", scale, "--policy", "move-at-turn",
            )  # fmt: skip
            timings["end2"] = time.monotonic()
            outcome.notes += _expect(release, code, "promoted", "healthy v2")

        record, verdict, watch = await _with_load(stack, options, healthy)
        outcome.add_phase("healthy v2", verdict, record)
        outcome.figures.append(
            Figure("healthy v2: rollout wall time", timings["end2"] - timings["start2"], "s")
        )
    return outcome


def _expect(release: dict[str, Any], code: int, state: str, what: str) -> list[str]:
    if release.get("state") == state:
        return []
    return [f"{what}: expected {state}, got exit {code}: {json.dumps(release)[:1500]}"]


async def _wait_for(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> float:
    """Poll ``predicate`` every 50 ms; the time it became true (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def kill(options: Options) -> Outcome:
    """SIGKILL of one of two canary replicas mid-step; its sessions go on on the other one."""
    outcome = Outcome("kill")
    scale = str(options.time_scale)
    # Turns of 0.3 s, so that the replica dies with turns in flight.
    with keel_up(
        replicas=2, rollout=_canary_section(options), env={"REHEARSAL_TURN_S": "0.3"}
    ) as stack:
        killed: dict[str, Any] = {}

        async def action(driver: LoadDriver, watch: Watcher) -> None:
            proc = await stack.keel_async(
                "rollout", "start", "--json", "--version", "v2", "--entrypoint", STABLE,
                "--replicas", "2", "--time-scale", scale, "--policy", "move-at-turn",
            )  # fmt: skip
            # The middle of the first canary step: v2 has live sessions and turns.
            await _wait_for(
                lambda: sum(1 for a in driver.record.acks if a.version == "v2") >= 200,
                timeout_s=120,
                what="200 turns on the canary",
            )
            replicas = [r for r in await stack.replicas() if r["version"] == "v2"]
            killed["replica"] = replicas[0]["name"]
            killed["canary_replicas"] = len(replicas)
            pid = stack.replica_pid(replicas[0]["url"])
            killed["at"] = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(10)
            await asyncio.to_thread(stack.keel, "rollout", "promote")
            out, _ = await proc.communicate()
            text = out.decode(errors="replace")
            release = json.loads(text[text.index("{") :]) if "{" in text else {"raw": text}
            outcome.notes += _expect(release, int(proc.returncode or 0), "promoted", "canary")

        record, verdict, _ = await _with_load(stack, options, action)
        outcome.add_phase("canary with a kill", verdict, record)
        at = float(killed["at"])
        # The killed replica's turns are the ones retried right after the kill (503 or
        # connection lost under them); their sessions must go on on v2.
        after = [a for a in record.acks if a.retried and at <= a.at <= at + 15]
        v2_sessions = {s for s, v in record.sessions.items() if v == "v2"}
        on_v2 = [a for a in after if a.session_id in v2_sessions]
        moved_off = [a for a in on_v2 if a.version != "v2"]
        outcome.figures += [
            Figure("canary replicas", killed["canary_replicas"], "replicas", killed["replica"]),
            Figure("v2 turns retried after the kill", len(on_v2), "turns"),
            Figure("of them served by another v2 replica", len(on_v2) - len(moved_off), "turns"),
        ]
        if moved_off:
            outcome.notes.append(f"{len(moved_off)} retried v2 turns left v2: {moved_off[:3]}")
    return outcome


async def bluegreen(options: Options) -> Outcome:
    """Switch to green, then ``keel rollout abort`` within the switch-back window."""
    outcome = Outcome("bluegreen")
    scale = str(options.time_scale)
    with keel_up(replicas=2, rollout=_canary_section(options)) as stack:
        timings: dict[str, float] = {}

        async def action(driver: LoadDriver, watch: Watcher) -> None:
            proc = await stack.keel_async(
                "rollout", "start", "--json", "--strategy", "bluegreen", "--version", "v2",
                "--entrypoint", STABLE, "--time-scale", scale,
            )  # fmt: skip
            await _wait_for(
                lambda: any(s.weights.get("v2", 0) == 100 for s in watch.samples),
                timeout_s=120,
                what="the switch to green",
            )
            timings["switch"] = time.monotonic()
            # Green serves new sessions for a while, then the operator switches back.
            await _wait_for(
                lambda: (driver.record.first_session("v2", after=timings["switch"]) or 0) > 0,
                timeout_s=60,
                what="a new session on green",
            )
            await asyncio.sleep(5)
            timings["abort"] = time.monotonic()
            done = await asyncio.to_thread(stack.keel, "rollout", "abort")
            timings["abort_returned"] = time.monotonic()
            if done.returncode != 0:
                outcome.notes.append(f"abort exited {done.returncode}: {done.stderr[-500:]}")
            out, _ = await proc.communicate()
            text = out.decode(errors="replace")
            release = json.loads(text[text.index("{") :]) if "{" in text else {"raw": text}
            outcome.notes += _expect(release, int(proc.returncode or 0), "aborted", "blue/green")

        record, verdict, watch = await _with_load(stack, options, action)
        outcome.add_phase("blue/green", verdict, record)
        abort = timings["abort"]
        blue = record.first_session("v1", after=abort)
        weights = watch.first(lambda s: s.weights.get("v1", 0) == 100, after=abort)
        if blue is not None:
            outcome.figures.append(
                Figure("switch-back: abort issued -> first new session on blue", blue - abort, "s")
            )
        if weights is not None:
            outcome.figures.append(
                Figure("switch-back: abort issued -> router weights on blue", weights - abort, "s")
            )
        requested = _abort_requested_at(stack)
        if requested is not None and blue is not None:
            outcome.figures.append(
                Figure(
                    "switch-back: abort recorded -> first new session on blue",
                    blue - requested,
                    "s",
                    "from the request in rollouts.db, without the CLI's start-up",
                )
            )
        outcome.figures.append(
            Figure("keel rollout abort command wall time", timings["abort_returned"] - abort, "s",
                   "process start included")
        )  # fmt: skip
    return outcome


async def rolling(options: Options) -> Outcome:
    """Four replicas replaced one at a time; the version skew is sampled during it."""
    outcome = Outcome("rolling")
    scale = str(options.time_scale)
    with keel_up(replicas=4, rollout=_canary_section(options)) as stack:
        timings: dict[str, float] = {}

        async def action(driver: LoadDriver, watch: Watcher) -> None:
            timings["start"] = time.monotonic()
            code, release = await rollout(
                stack, "--strategy", "rolling", "--version", "v2", "--entrypoint", STABLE,
                "--time-scale", scale, "--policy", "move-at-turn",
            )  # fmt: skip
            timings["end"] = time.monotonic()
            outcome.notes += _expect(release, code, "promoted", "rolling")

        record, verdict, watch = await _with_load(stack, options, action)
        outcome.add_phase("rolling", verdict, record)
        outcome.figures.append(
            Figure("rolling: rollout wall time", timings["end"] - timings["start"], "s")
        )
        outcome.skew = _skew(watch, timings["start"], timings["end"])
    return outcome


def _skew(watch: Watcher, start: float, end: float, *, every_s: float = 2.0) -> list[str]:
    """Live sessions per version (the clients' view) and the router's pins, every few s."""
    lines: list[str] = []
    next_at = start
    for sample in watch.samples:
        if sample.at < next_at or sample.at > end + every_s:
            continue
        next_at = sample.at + every_s
        live = " ".join(f"{v}={n}" for v, n in sorted(sample.live.items()))
        weights = " ".join(f"{v}:{w}%" for v, w in sorted(sample.weights.items()))
        pinned = " ".join(f"{v}={n}" for v, n in sorted(sample.pinned.items()))
        lines.append(
            f"t+{sample.at - start:5.1f}s  live {live:<16} pinned {pinned:<18} weights {weights}"
        )
    return lines


async def _memory_events(stack: Stack) -> int:
    """Events the memory server holds: in its log plus those a restore set aside.

    A restore moves later events from the log to a quarantine, so the log alone
    shrinks; the two together never do, unless something was deleted.
    """
    services = json.loads((stack.data_dir / "stack.json").read_text())["services"]
    async with httpx.AsyncClient(
        base_url=services["memory"]["url"], headers=stack.admin_headers(), timeout=30.0
    ) as client:
        integrity = await client.get("/v1/integrity")
        integrity.raise_for_status()
        quarantine = await client.get("/v1/quarantine")
        quarantine.raise_for_status()
        held = sum(int(q["event_count"]) for q in quarantine.json()["quarantines"])
        return int(integrity.json()["events"]) + held


async def _rollback_until(stack: Stack, step: str) -> tuple[int | None, list[str]]:
    """``keel rollback``; SIGKILLed as soon as it reports ``step`` done (None: ran to its end)."""
    proc = await asyncio.create_subprocess_exec(
        *stack.keel_command("rollback", "--drain-timeout", "60", "--no-golden"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=stack_env(),
        cwd=stack.directory,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if step and step in line and "done" in line:
            proc.kill()
            await proc.wait()
            return None, lines
    await proc.wait()
    return int(proc.returncode or 0), lines


async def rollback(options: Options) -> Outcome:
    """Blue/green to v2, its controller dies; ``keel rollback`` SIGKILLed half-way, run again."""
    outcome = Outcome("rollback")
    scale = str(options.time_scale)
    with keel_up(replicas=2, rollout=_canary_section(options)) as stack:
        events: list[int] = []
        for n in range(3):
            put = stack.keel("memory", "put", "agent:rehearsal", f"before deploy {n}")
            if put.returncode != 0:
                outcome.notes.append(f"memory put failed: {put.stdout}{put.stderr}")
        runs: list[tuple[int | None, list[str]]] = []
        marks: dict[str, float] = {}

        async def sample_events() -> None:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    events.append(await _memory_events(stack))
                await asyncio.sleep(0.2)

        async def action(driver: LoadDriver, watch: Watcher) -> None:
            controller = await stack.keel_async(
                "rollout", "start", "--json", "--strategy", "bluegreen", "--version", "v2",
                "--entrypoint", STABLE, "--time-scale", scale, "--policy", "move-at-turn",
            )  # fmt: skip
            await _wait_for(
                lambda: any(s.weights.get("v2", 0) == 100 for s in watch.samples),
                timeout_s=120,
                what="the switch to green",
            )
            for n in range(3):
                stack.keel("memory", "put", "agent:rehearsal", f"after deploy {n}")
            controller.kill()  # the controller dies; its heartbeat goes stale
            await controller.wait()
            marks["controller killed"] = time.monotonic() - driver.record.started
            await asyncio.sleep(6)
            sampler = asyncio.create_task(sample_events())
            try:
                marks["rollback started"] = time.monotonic() - driver.record.started
                runs.append(await _rollback_until(stack, "restore_snapshot"))
                marks["rollback killed"] = time.monotonic() - driver.record.started
                runs.append(await _rollback_until(stack, ""))
                marks["rollback run again, done"] = time.monotonic() - driver.record.started
                runs.append(await _rollback_until(stack, ""))
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

        record, verdict, watch = await _with_load(stack, options, action)
        outcome.add_phase("rollback", verdict, record)
        killed, again, third = runs
        if killed[0] is not None:
            outcome.notes.append("the first rollback ended before it could be killed")
        if again[0] != 0 or third[0] != 0:
            outcome.notes.append(f"rollback run again: {again[0]} / {third[0]}: {again[1][-8:]}")
        table = watch.samples[-1].weights if watch.samples else {}
        replicas = [r["version"] for r in await stack.replicas()]
        search = stack.keel("memory", "search", "agent:rehearsal", "deploy", "--json")
        found = [m["memory"]["content"] for m in json.loads(search.stdout or "{}")["results"]]
        listed = json.loads(stack.keel("memory", "quarantine", "list", "--json").stdout or "{}")
        quarantine = listed.get("quarantines", [])
        decreased = any(b < a for a, b in itertools.pairwise(events))
        outcome.figures += [
            Figure("router weights after", 0, "", json.dumps(table)),
            Figure("replicas after", len(replicas), "replicas", ", ".join(replicas)),
            Figure("memories before the deploy kept", sum("before" in c for c in found), ""),
            Figure("memories after the deploy in view", sum("after" in c for c in found), ""),
            Figure("quarantines", len(quarantine), "", "later writes set aside"),
            Figure("memory events (log + quarantine) first / last", events[0] if events else 0, "",
                   f"last {events[-1] if events else 0}; decreased: {decreased}"),
            Figure("second run steps", len(again[1]), "lines", " | ".join(again[1][-6:])),
        ]  # fmt: skip
        outcome.figures += [Figure(f"t: {name}", at, "s", "since the load started")
                            for name, at in marks.items()]  # fmt: skip
        if table.get("v1") != 100 or table.get("v2", 0) != 0:
            outcome.notes.append(f"router table after rollback: {table}")
        if set(replicas) != {"v1"}:
            outcome.notes.append(f"replicas after rollback: {replicas}")
        if sum("after" in c for c in found) or sum("before" in c for c in found) != 3:
            outcome.notes.append(f"memory after rollback: {found}")
        if not quarantine or decreased:
            outcome.notes.append(f"quarantine {quarantine}; events {events[:3]}..{events[-3:]}")
    return outcome


SCENARIOS: dict[str, Callable[[Options], Coroutine[Any, Any, Outcome]]] = {
    "canary": canary,
    "kill": kill,
    "bluegreen": bluegreen,
    "rolling": rolling,
    "rollback": rollback,
}
