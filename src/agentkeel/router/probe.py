"""Readiness of the replicas, as this router sees it.

Every ``router.probe_interval_s`` each replica's ``GET /ready`` is asked: 200
is ready, anything else (503 while draining, refused, silent past
``router.probe_timeout_s``) is not. The data path marks a replica not ready at
once when it refuses a connection or answers ``draining``; only a probe makes
it ready again. Every change is logged.
"""

from __future__ import annotations

import asyncio

from agentkeel.router.routing import Replica
from agentkeel.router.upstream import fetch

__all__ = ["probe_all", "probe_replica", "probe_request"]


def probe_request(replica: Replica) -> bytes:
    return b"GET /ready HTTP/1.1\r\nhost: " + replica.host.encode() + b"\r\n\r\n"


async def probe_replica(replica: Replica, *, timeout_s: float) -> tuple[bool, str]:
    """Whether ``replica`` is ready, and why not."""
    answer = await fetch(replica.pool, probe_request(replica), timeout_s=timeout_s)
    if answer is None:
        return False, "its /ready did not answer"
    if answer.status != 200:
        return False, f"its /ready answered {answer.status}"
    return True, "its /ready answered 200"


async def probe_all(replicas: list[Replica], *, timeout_s: float) -> list[tuple[bool, str]]:
    """Probe every replica at once."""
    return list(
        await asyncio.gather(*(probe_replica(replica, timeout_s=timeout_s) for replica in replicas))
    )
