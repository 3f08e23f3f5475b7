"""Samples the router's table while a rollout runs: weights and live sessions per version."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    weights: dict[str, int]
    pinned: dict[str, int]
    live: Counter[str]


@dataclass
class Watcher:
    """Polls ``GET /admin/versions`` and the clients' live sessions every ``period_s``."""

    router_url: str
    headers: dict[str, str]
    live: Callable[[], Counter[str]]
    period_s: float = 0.1
    samples: list[Sample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.router_url, headers=self.headers, timeout=5.0, trust_env=False
        ) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    answer = await client.get("/admin/versions")
                    if answer.status_code == 200:
                        self.samples.append(
                            Sample(
                                time.monotonic(),
                                _weights(answer.json()),
                                _pinned(answer.json()),
                                self.live(),
                            )
                        )
                await asyncio.sleep(self.period_s)

    def first(self, predicate: Callable[[Sample], bool], *, after: float = 0.0) -> float | None:
        """When the first sample after ``after`` met ``predicate``."""
        for sample in self.samples:
            if sample.at >= after and predicate(sample):
                return sample.at
        return None


def _weights(body: dict[str, Any]) -> dict[str, int]:
    return {str(v["version"]): int(v.get("weight", 0)) for v in body.get("versions", [])}


def _pinned(body: dict[str, Any]) -> dict[str, int]:
    return {str(v["version"]): int(v.get("pinned_sessions", 0)) for v in body.get("versions", [])}
