"""Live sessions through the router, like real clients, with every turn on the record.

Each of ``sessions`` clients runs one conversation after another: it creates a
session, takes ``turns`` turns with a think time between them, ends it
(DELETE) and starts the next, until ``stop()``. On a 503 with ``Retry-After``
(a replica draining or killed under the turn) it waits and sends the same turn
again, which is what the router's contract asks of a client; the stored turn
number the reply names makes that safe. Every acknowledged turn (session, turn
number, the version the reply names, when) and every turn that finally failed
(and why) is recorded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

RETRY_BUDGET_S = 60.0
"""How long a client keeps retrying one turn on 503 before it records the turn as failed."""


@dataclass(frozen=True, slots=True)
class Ack:
    session_id: str
    turn: int
    version: str
    at: float
    retried: bool


@dataclass(frozen=True, slots=True)
class Failure:
    session_id: str | None
    turn: int | None
    reason: str
    at: float


@dataclass
class LoadRecord:
    """What the clients saw."""

    acks: list[Ack] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # session -> version at creation
    retries: int = 0
    started: float = field(default_factory=time.monotonic)

    def first_ack(self, version: str, *, after: float = 0.0) -> float | None:
        """When the first turn named ``version`` was acknowledged (monotonic), or None."""
        times = [a.at for a in self.acks if a.version == version and a.at >= after]
        return min(times) if times else None

    def first_session(self, version: str, *, after: float) -> float | None:
        """When the first session created after ``after`` answered on ``version``."""
        times = [a.at for a in self.acks if a.version == version and a.turn == 1 and a.at >= after]
        return min(times) if times else None


class LoadDriver:
    """``sessions`` concurrent clients against ``router_url``."""

    def __init__(
        self,
        router_url: str,
        *,
        sessions: int,
        turns: tuple[int, int] = (6, 12),
        think_s: tuple[float, float] = (0.5, 1.5),
        seed: int = 8,
    ) -> None:
        self.router_url = router_url
        self.sessions = sessions
        self.turns = turns
        self.think_s = think_s
        self.record = LoadRecord()
        self._random = random.Random(seed)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._current: dict[int, str] = {}  # client -> version of its live session

    async def start(self) -> None:
        limits = httpx.Limits(max_connections=self.sessions + 8, max_keepalive_connections=None)
        self._client = httpx.AsyncClient(
            base_url=self.router_url, timeout=60.0, limits=limits, trust_env=False
        )
        self._tasks = [
            asyncio.create_task(self._client_loop(n), name=f"client-{n}")
            for n in range(self.sessions)
        ]

    async def stop(self) -> LoadRecord:
        """Let every client finish its current conversation (so no turn is cut off), then end."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        if self._client is not None:
            await self._client.aclose()
        return self.record

    def live_by_version(self) -> Counter[str]:
        """Live sessions per version as the clients see them (the version of their last turn)."""
        return Counter(self._current.values())

    async def _client_loop(self, n: int) -> None:
        # Spread the starts over one think time, as real users arrive.
        await asyncio.sleep(self._random.uniform(0, self.think_s[1]))
        while not self._stopping.is_set():
            await self._conversation(n)
        self._current.pop(n, None)

    async def _conversation(self, n: int) -> None:
        assert self._client is not None
        created = await self._send("POST", "/v1/sessions", {"user_id": f"user-{n}"}, None, None)
        if created is None:
            await asyncio.sleep(1.0)
            return
        session_id = str(created["session_id"])
        self.record.sessions[session_id] = str(created["version"])
        self._current[n] = str(created["version"])
        turns = self._random.randint(*self.turns)
        for number in range(1, turns + 1):
            path = f"/v1/sessions/{session_id}/messages"
            body = await self._send("POST", path, {"content": f"turn {number}"}, session_id, number)
            if body is None:
                break
            self._current[n] = str(body["version"])
            if number < turns:
                await asyncio.sleep(self._random.uniform(*self.think_s))
        await self._send("DELETE", f"/v1/sessions/{session_id}", None, session_id, None)
        self._current.pop(n, None)

    async def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, str] | None,
        session_id: str | None,
        turn: int | None,
    ) -> dict[str, object] | None:
        """One request with the client's retry on 503; records the turn's outcome."""
        assert self._client is not None
        deadline = time.monotonic() + RETRY_BUDGET_S
        retried = False
        while True:
            try:
                answer = await self._client.request(method, path, json=payload)
            except httpx.HTTPError as exc:
                self._fail(session_id, turn, f"{type(exc).__name__}: {exc}")
                return None
            if answer.status_code == 503 and time.monotonic() < deadline:
                retried = True
                self.record.retries += 1
                await asyncio.sleep(_retry_after(answer))
                continue
            if answer.status_code >= 400:
                self._fail(session_id, turn, f"{answer.status_code} {_code(answer)}")
                return None
            body: dict[str, object] = answer.json() if method != "DELETE" else {}
            if turn is not None and method == "POST":
                self.record.acks.append(
                    Ack(
                        session_id=str(session_id),
                        turn=int(str(body["turn"])),
                        version=str(body["version"]),
                        at=time.monotonic(),
                        retried=retried,
                    )
                )
            return body

    def _fail(self, session_id: str | None, turn: int | None, reason: str) -> None:
        self.record.failures.append(Failure(session_id, turn, reason, time.monotonic()))


def _retry_after(answer: httpx.Response) -> float:
    try:
        return min(5.0, max(0.05, float(answer.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _code(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:80]
