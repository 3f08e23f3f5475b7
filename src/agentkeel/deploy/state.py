"""The rollout's persisted state: ``<data_dir>/rollouts.db``.

Three tables, one SQLite file, shared by every ``keel rollout`` process:

- ``releases``: one row per release (``Release``), rewritten by the controller
  after every transition and every tick, so a controller killed mid-rollout
  and started again continues at the same step with the step's elapsed time.
- ``rollout_requests``: promote / pause / resume / abort written by another
  process; the running controller takes them within a tick and writes the
  outcome back.
- ``rollout_controllers``: who drives a release, with a heartbeat. A release
  has at most one live controller; a stale heartbeat lets another process
  take over (``keel rollout resume``, or ``abort`` rolling back by itself).

At most one release is active (``running`` or ``paused``) at a time; the
check runs inside the write transaction that creates the release.

>>> async with RolloutStore(data_dir / "rollouts.db") as store:
...     release = await store.latest()
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from agentkeel.deploy.types import ReplicaSpec, SessionPolicy
from agentkeel.errors import Conflict
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.storage import sqlite as storage

__all__ = [
    "ACTIVE_STATES",
    "ROLLOUTS_FILE",
    "Controller",
    "Release",
    "ReleaseState",
    "RolloutRequest",
    "RolloutStore",
    "StrategyName",
]

ROLLOUTS_FILE = "rollouts.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

ReleaseState = Literal["running", "paused", "promoted", "aborted", "rolled_back", "failed"]
StrategyName = Literal["canary", "bluegreen", "rolling"]
Command = Literal["promote", "pause", "resume", "abort"]
ACTIVE_STATES: frozenset[str] = frozenset({"running", "paused"})
COMMANDS: tuple[str, ...] = get_args(Command)

_TABLES = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    release TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    previous TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL,
    phase TEXT NOT NULL,
    elapsed_s REAL NOT NULL,
    snapshot_id TEXT,
    time_scale REAL NOT NULL,
    policy TEXT NOT NULL,
    spec TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_by_start ON releases (started_at);
CREATE TABLE IF NOT EXISTS rollout_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    release TEXT NOT NULL,
    command TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at REAL NOT NULL,
    taken_at REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS rollout_requests_open ON rollout_requests (release, taken_at);
CREATE TABLE IF NOT EXISTS rollout_controllers (
    release TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
)
"""

_COLUMNS = (
    "release, version, previous, strategy, state, step, phase, elapsed_s, snapshot_id, "
    "time_scale, policy, spec, reason, started_at, updated_at, detail"
)


@dataclass(slots=True)
class Release:
    """One release and where its rollout is.

    ``phase`` is the strategy's place inside a step ("snapshot", "start",
    "golden", "traffic", "switched", "replace", "retiring"); ``elapsed_s`` is
    rollout time spent in the current step or phase (real seconds times
    ``time_scale``; paused time and time with no controller do not count).
    ``detail`` holds what the view shows and what a strategy needs to resume:
    weights, the last verdict, sessions per version, the replicas it started.
    """

    release: str
    version: str
    previous: str
    strategy: StrategyName
    started_at: float
    updated_at: float
    state: ReleaseState = "running"
    step: int = 0
    phase: str = "snapshot"
    elapsed_s: float = 0.0
    snapshot_id: str | None = None
    time_scale: float = 1.0
    policy: SessionPolicy = "pinned"
    spec: ReplicaSpec | None = None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Running or paused: a controller may still move traffic for it."""
        return self.state in ACTIVE_STATES

    def replica_spec(self) -> ReplicaSpec:
        """How this release's replicas start (the version alone when none was given)."""
        return self.spec or ReplicaSpec(version=self.version)

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON (``keel rollout status --json``); env values are left out."""
        spec = self.replica_spec()
        return {
            "release": self.release,
            "version": self.version,
            "previous": self.previous,
            "strategy": self.strategy,
            "state": self.state,
            "step": self.step,
            "phase": self.phase,
            "elapsed_s": round(self.elapsed_s, 3),
            "snapshot_id": self.snapshot_id,
            "time_scale": self.time_scale,
            "policy": self.policy,
            "spec": {**_spec_json(spec), "env": sorted(spec.env)},
            "reason": self.reason,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class RolloutRequest:
    """A command for the controller, written by another process."""

    id: int
    release: str
    command: Command
    requested_by: str
    requested_at: float
    taken_at: float | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Controller:
    """The process that drives a release, as its last heartbeat says."""

    release: str
    owner: str
    pid: int
    started_at: float
    heartbeat_at: float

    def alive(self, now: float, *, timeout_s: float) -> bool:
        return now - self.heartbeat_at < timeout_s


class RolloutStore(storage.SqliteFile):
    """Releases, requests and controller heartbeats in one SQLite file.

    Every method is a coroutine run on the store's own thread, so a controller's
    event loop never waits on the disk or on another process's lock.
    """

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        super().__init__(
            path,
            label="rollout state",
            component="rollouts",
            schema_version=SCHEMA_VERSION,
            tables=_TABLES,
            thread_name="keel-rollouts",
            busy_timeout_ms=BUSY_TIMEOUT_MS,
        )
        self._clock = clock or SystemClock()

    # -- releases -----------------------------------------------------------------------

    async def create(self, release: Release) -> Release:
        """Record a new release; ``Conflict`` while another one is running or paused."""
        release.updated_at = self._clock.time()
        await self._worker.run(_create, release)
        return release

    async def save(self, release: Release) -> Release:
        """Write the release as it is now (insert or replace)."""
        release.updated_at = self._clock.time()
        await self._worker.run(_save, release)
        return release

    async def get(self, release: str) -> Release | None:
        return await self._worker.run(_get, release)

    async def latest(self) -> Release | None:
        """The release started last, whatever its state."""
        return await self._worker.run(_latest)

    async def active(self) -> Release | None:
        """The release that is running or paused, if any."""
        return await self._worker.run(_active)

    async def promoted(self, version: str) -> Release | None:
        """The last release that made ``version`` stable, if a rollout deployed it."""
        return await self._worker.run(_promoted, version)

    async def history(self, *, limit: int = 20) -> list[Release]:
        """Releases, newest first."""
        return await self._worker.run(_history, limit)

    # -- requests from other processes ------------------------------------------------------

    async def request(self, release: str, command: Command, *, requested_by: str) -> int:
        """Ask the release's controller to ``command``; the request's id."""
        if command not in COMMANDS:
            raise ValueError(f"unknown rollout command {command!r}; one of {COMMANDS}")
        return await self._worker.run(_request, release, command, requested_by, self._clock.time())

    async def take_requests(self, release: str) -> list[RolloutRequest]:
        """The release's requests nobody took yet, oldest first, marked taken.

        A request taken but never finished (its controller died before it
        wrote the outcome) is offered again to the next controller that claims
        the release (``claim``).
        """
        return await self._worker.run(_take_requests, release, self._clock.time())

    async def finish_request(self, request_id: int, outcome: str) -> None:
        await self._worker.run(_finish_request, request_id, outcome)

    async def get_request(self, request_id: int) -> RolloutRequest | None:
        return await self._worker.run(_get_request, request_id)

    # -- the controller's lease ----------------------------------------------------------------

    async def claim(
        self, release: str, *, owner: str, pid: int, stale_after_s: float
    ) -> Controller | None:
        """Become ``release``'s controller: None if so, else the live one that holds it.

        A holder whose heartbeat is older than ``stale_after_s`` is taken for dead;
        the requests it took and never finished are queued again.
        """
        return await self._worker.run(
            _claim, release, owner, pid, self._clock.time(), stale_after_s
        )

    async def checkpoint(self, release: Release, *, owner: str) -> bool:
        """Save ``release`` and beat ``owner``'s heartbeat in one transaction.

        False (and nothing written) when another process has taken the release over.
        """
        release.updated_at = self._clock.time()
        return await self._worker.run(_checkpoint, release, owner)

    async def heartbeat(self, release: str, *, owner: str) -> bool:
        """Beat ``owner``'s heartbeat; False when another process has taken the release over."""
        return await self._worker.run(_heartbeat, release, owner, self._clock.time())

    async def release_claim(self, release: str, *, owner: str) -> None:
        """Give the release up (a controller that stops cleanly)."""
        await self._worker.run(_release_claim, release, owner)

    async def controller(self, release: str) -> Controller | None:
        """Who drives ``release`` as far as the heartbeats say (alive or not)."""
        return await self._worker.run(_controller, release)

    def now(self) -> float:
        """The store's wall clock (heartbeats and request times are in it)."""
        return self._clock.time()


# -- SQL, run on the worker thread -----------------------------------------------------------


def _row(release: Release) -> tuple[Any, ...]:
    return (
        release.release,
        release.version,
        release.previous,
        release.strategy,
        release.state,
        release.step,
        release.phase,
        release.elapsed_s,
        release.snapshot_id,
        release.time_scale,
        release.policy,
        json.dumps(_spec_json(release.replica_spec())),
        release.reason,
        release.started_at,
        release.updated_at,
        json.dumps(release.detail, sort_keys=True),
    )


def _from_row(row: tuple[Any, ...]) -> Release:
    spec = json.loads(row[11])
    return Release(
        release=row[0],
        version=row[1],
        previous=row[2],
        strategy=cast(StrategyName, row[3]),
        state=cast(ReleaseState, row[4]),
        step=int(row[5]),
        phase=row[6],
        elapsed_s=float(row[7]),
        snapshot_id=row[8],
        time_scale=float(row[9]),
        policy=cast(SessionPolicy, row[10]),
        spec=ReplicaSpec(
            version=spec["version"],
            entrypoint=spec.get("entrypoint"),
            config=spec.get("config"),
            env=dict(spec.get("env") or {}),
        ),
        reason=row[12],
        started_at=float(row[13]),
        updated_at=float(row[14]),
        detail=json.loads(row[15]),
    )


def _spec_json(spec: ReplicaSpec) -> dict[str, Any]:
    return {
        "version": spec.version,
        "entrypoint": spec.entrypoint,
        "config": spec.config,
        "env": dict(spec.env),
    }


_INSERT = f"INSERT OR REPLACE INTO releases ({_COLUMNS}) VALUES ({', '.join('?' * 16)})"


def _create(conn: sqlite3.Connection, release: Release) -> None:
    with storage.write(conn):
        row = conn.execute(
            "SELECT release, state FROM releases WHERE state IN ('running', 'paused') LIMIT 1"
        ).fetchone()
        if row is not None:
            raise Conflict(
                f"release {row[0]} is {row[1]}; one rollout at a time. Finish it first "
                "(keel rollout status, then promote, resume or abort).",
                code="rollout_active",
            )
        if conn.execute("SELECT 1 FROM releases WHERE release = ?", (release.release,)).fetchone():
            raise Conflict(f"a release named {release.release} exists already", code="conflict")
        conn.execute(_INSERT, _row(release))


def _save(conn: sqlite3.Connection, release: Release) -> None:
    with storage.write(conn):
        conn.execute(_INSERT, _row(release))


def _get(conn: sqlite3.Connection, release: str) -> Release | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM releases WHERE release = ?", (release,)).fetchone()
    return None if row is None else _from_row(row)


def _latest(conn: sqlite3.Connection) -> Release | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM releases ORDER BY started_at DESC, rowid DESC LIMIT 1"
    ).fetchone()
    return None if row is None else _from_row(row)


def _active(conn: sqlite3.Connection) -> Release | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM releases WHERE state IN ('running', 'paused') "
        "ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    return None if row is None else _from_row(row)


def _promoted(conn: sqlite3.Connection, version: str) -> Release | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM releases WHERE version = ? AND state = 'promoted' "
        "ORDER BY started_at DESC, rowid DESC LIMIT 1",
        (version,),
    ).fetchone()
    return None if row is None else _from_row(row)


def _history(conn: sqlite3.Connection, limit: int) -> list[Release]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM releases ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,)
    ).fetchall()
    return [_from_row(row) for row in rows]


_REQUEST_COLUMNS = "id, release, command, requested_by, requested_at, taken_at, outcome"


def _request_from_row(row: tuple[Any, ...]) -> RolloutRequest:
    return RolloutRequest(
        id=int(row[0]),
        release=row[1],
        command=cast(Command, row[2]),
        requested_by=row[3],
        requested_at=float(row[4]),
        taken_at=None if row[5] is None else float(row[5]),
        outcome=row[6],
    )


def _request(
    conn: sqlite3.Connection, release: str, command: str, requested_by: str, now: float
) -> int:
    with storage.write(conn):
        cursor = conn.execute(
            "INSERT INTO rollout_requests (release, command, requested_by, requested_at) "
            "VALUES (?, ?, ?, ?)",
            (release, command, requested_by, now),
        )
    return int(cursor.lastrowid or 0)


def _take_requests(conn: sqlite3.Connection, release: str, now: float) -> list[RolloutRequest]:
    with storage.write(conn):
        rows = conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM rollout_requests "
            "WHERE release = ? AND taken_at IS NULL ORDER BY id",
            (release,),
        ).fetchall()
        if rows:
            conn.execute(
                "UPDATE rollout_requests SET taken_at = ? WHERE release = ? AND taken_at IS NULL",
                (now, release),
            )
    return [_request_from_row(row) for row in rows]


def _finish_request(conn: sqlite3.Connection, request_id: int, outcome: str) -> None:
    with storage.write(conn):
        conn.execute("UPDATE rollout_requests SET outcome = ? WHERE id = ?", (outcome, request_id))


def _get_request(conn: sqlite3.Connection, request_id: int) -> RolloutRequest | None:
    row = conn.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM rollout_requests WHERE id = ?", (request_id,)
    ).fetchone()
    return None if row is None else _request_from_row(row)


def _controller_from_row(row: tuple[Any, ...]) -> Controller:
    return Controller(
        release=row[0],
        owner=row[1],
        pid=int(row[2]),
        started_at=float(row[3]),
        heartbeat_at=float(row[4]),
    )


def _controller(conn: sqlite3.Connection, release: str) -> Controller | None:
    row = conn.execute(
        "SELECT release, owner, pid, started_at, heartbeat_at FROM rollout_controllers "
        "WHERE release = ?",
        (release,),
    ).fetchone()
    return None if row is None else _controller_from_row(row)


def _claim(
    conn: sqlite3.Connection, release: str, owner: str, pid: int, now: float, stale_after_s: float
) -> Controller | None:
    with storage.write(conn):
        holder = _controller(conn, release)
        if (
            holder is not None
            and holder.owner != owner
            and holder.alive(now, timeout_s=stale_after_s)
        ):
            return holder
        conn.execute(
            "INSERT OR REPLACE INTO rollout_controllers "
            "(release, owner, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
            (release, owner, pid, now, now),
        )
        if holder is None or holder.owner != owner:
            # Taken by a controller that died before carrying them out: offer them again.
            conn.execute(
                "UPDATE rollout_requests SET taken_at = NULL "
                "WHERE release = ? AND taken_at IS NOT NULL AND outcome IS NULL",
                (release,),
            )
    return None


def _checkpoint(conn: sqlite3.Connection, release: Release, owner: str) -> bool:
    with storage.write(conn):
        cursor = conn.execute(
            "UPDATE rollout_controllers SET heartbeat_at = ? WHERE release = ? AND owner = ?",
            (release.updated_at, release.release, owner),
        )
        if cursor.rowcount == 0:
            return False
        conn.execute(_INSERT, _row(release))
    return True


def _heartbeat(conn: sqlite3.Connection, release: str, owner: str, now: float) -> bool:
    with storage.write(conn):
        cursor = conn.execute(
            "UPDATE rollout_controllers SET heartbeat_at = ? WHERE release = ? AND owner = ?",
            (now, release, owner),
        )
    return cursor.rowcount > 0


def _release_claim(conn: sqlite3.Connection, release: str, owner: str) -> None:
    with storage.write(conn):
        conn.execute(
            "DELETE FROM rollout_controllers WHERE release = ? AND owner = ?", (release, owner)
        )
