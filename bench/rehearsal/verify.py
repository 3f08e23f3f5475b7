"""Checks a rehearsal from the stored sessions, not from logs.

For every session the clients created, ``GET /v1/sessions/{id}`` through the
router gives its turns with the version that served each one. The checks:

- every acknowledged turn is stored, on the version its reply named;
- a session's turns are numbered 1..n with no gap, and are on one version or
  change version once, at a turn boundary (a move: v1 v1 v2 v2, never v1 v2 v1);
- no turn failed (the load driver's record) because of the deploy.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.rehearsal.load import LoadRecord


@dataclass
class Verdict:
    sessions_checked: int = 0
    turns_checked: int = 0
    moves: int = 0
    moves_by_path: Counter[str] = field(default_factory=Counter)
    missing_turns: list[str] = field(default_factory=list)
    wrong_version: list[str] = field(default_factory=list)
    bad_sequences: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    failed_turns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_turns
            or self.wrong_version
            or self.bad_sequences
            or self.unreadable
            or self.failed_turns
        )

    def problems(self) -> list[str]:
        named = [
            ("acknowledged turn not stored", self.missing_turns),
            ("stored version differs from the reply", self.wrong_version),
            ("versions not one run or one move", self.bad_sequences),
            ("session not readable", self.unreadable),
            ("failed turn", self.failed_turns),
        ]
        return [f"{label}: {item}" for label, items in named for item in items[:5]]


def version_runs(versions: list[str]) -> list[str]:
    """The versions of consecutive turns, each run once: v1 v1 v2 v2 -> [v1, v2]."""
    runs: list[str] = []
    for version in versions:
        if not runs or runs[-1] != version:
            runs.append(version)
    return runs


async def verify(router_url: str, record: LoadRecord, *, concurrency: int = 16) -> Verdict:
    verdict = Verdict()
    verdict.failed_turns = [f"{f.session_id} turn {f.turn}: {f.reason}" for f in record.failures]
    acked: dict[str, dict[int, str]] = {}
    for ack in record.acks:
        acked.setdefault(ack.session_id, {})[ack.turn] = ack.version
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=router_url, timeout=60.0, trust_env=False) as client:

        async def check(session_id: str) -> None:
            async with gate:
                answer = await client.get(f"/v1/sessions/{session_id}")
            if answer.status_code != 200:
                verdict.unreadable.append(f"{session_id}: {answer.status_code}")
                return
            stored = {int(t["turn"]): str(t["version"]) for t in answer.json()["turns"]}
            verdict.sessions_checked += 1
            verdict.turns_checked += len(stored)
            for number, version in acked.get(session_id, {}).items():
                if number not in stored:
                    verdict.missing_turns.append(f"{session_id} turn {number}")
                elif stored[number] != version:
                    verdict.wrong_version.append(
                        f"{session_id} turn {number}: reply {version}, stored {stored[number]}"
                    )
            if sorted(stored) != list(range(1, len(stored) + 1)):
                verdict.bad_sequences.append(f"{session_id}: turn numbers {sorted(stored)}")
            runs = version_runs([stored[n] for n in sorted(stored)])
            if len(runs) > 2:
                verdict.bad_sequences.append(f"{session_id}: {' -> '.join(runs)}")
            elif len(runs) == 2:
                verdict.moves += 1
                verdict.moves_by_path[" -> ".join(runs)] += 1

        await asyncio.gather(*(check(s) for s in record.sessions))
    return verdict
