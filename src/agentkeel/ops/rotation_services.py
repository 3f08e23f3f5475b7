"""What a rotation talks to over HTTP: services' ``/admin/secrets``, a replica's live
sessions, and the rollout state (a rotation waits for no rollout: it refuses).

>>> holders = [HttpSecretHolder(url, token_file=token) for url in urls]
>>> census = ReplicaSessionCensus(replica_urls, token_file=token)
>>> rotation = Rotation(..., holders=holders, census=census,
...     active_rollout=rollout_guard(data_dir))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from agentkeel.deploy.state import ROLLOUTS_FILE, RolloutStore
from agentkeel.errors import KeelError, NotFound, Unavailable
from agentkeel.runtime.admin_client import AgentAdminClient
from agentkeel.secrets.rotation import HeldSecret
from agentkeel.web.admin_http import AdminHttpClient

__all__ = ["HttpSecretHolder", "ReplicaSessionCensus", "rollout_guard"]

TIMEOUT_S = 10.0


class SecretsAdminClient(AdminHttpClient):
    """``/admin/secrets`` of any agentkeel service (replica, router, memory, tools)."""

    peer = "the service"
    unavailable_code = "service_unavailable"
    reach_hint = "Is it running, and is the --service URL right?"

    async def report(self) -> dict[str, Any]:
        return await self._request("GET", "/admin/secrets")

    async def refresh(self) -> dict[str, Any]:
        return await self._request("POST", "/admin/secrets/refresh", {})


class HttpSecretHolder:
    """One service as a rotation sees it. A service without ``/admin/secrets`` (404)
    uses no rotatable secret, so it is never waited for."""

    def __init__(self, url: str, *, token_file: Path, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return self.url

    def _client(self) -> SecretsAdminClient:
        return SecretsAdminClient(
            base_url=self.url, token_file=self.token_file, timeout_s=self.timeout_s
        )

    async def held(self, path: str) -> HeldSecret | None:
        try:
            async with self._client() as client:
                report = await client.report()
        except NotFound:
            return None
        for entry in report.get("secrets", []):
            if entry.get("path") != path:
                continue
            if "error" in entry:
                raise Unavailable(f"{self.url} cannot read '{path}': {entry['error']}")
            if entry.get("missing"):
                return HeldSecret(path=path, generations=(), current=0)
            return HeldSecret(
                path=path,
                generations=tuple(int(g) for g in entry.get("generations", [])),
                current=int(entry.get("current", 0)),
            )
        return None

    async def refresh(self) -> None:
        try:
            async with self._client() as client:
                await client.refresh()
        except NotFound:
            return


class ReplicaSessionCensus:
    """Live sessions from the shared session store, through the first replica that
    answers (every replica counts the same store)."""

    def __init__(
        self, urls: Sequence[str], *, token_file: Path, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.urls = list(urls)
        self.token_file = token_file
        self.timeout_s = timeout_s

    async def live_started_before(self, at: float) -> int:
        problems: list[str] = []
        for url in self.urls:
            try:
                async with AgentAdminClient(
                    base_url=url, token_file=self.token_file, timeout_s=self.timeout_s
                ) as client:
                    report = await client.live(started_before=at)
            except KeelError as exc:
                problems.append(f"{url}: {exc.message}")
                continue
            older = report.get("started_before")
            if isinstance(older, dict) and "count" in older:
                return int(older["count"])
            problems.append(f"{url}: its /admin/sessions/live does not count by start time")
        raise Unavailable(
            "no replica counted the live sessions (" + "; ".join(problems or ["none given"]) + ")"
        )


def rollout_guard(data_dir: Path) -> Callable[[], Awaitable[str | None]]:
    """``active_rollout`` over ``<data_dir>/rollouts.db``: the release running or paused."""

    async def active_rollout() -> str | None:
        path = data_dir / ROLLOUTS_FILE
        if not path.exists():
            return None
        async with RolloutStore(path) as store:
            release = await store.active()
        return None if release is None else f"{release.release} ({release.state})"

    return active_rollout
