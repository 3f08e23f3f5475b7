"""``AgentAdminClient``: the agent server's session-lifecycle admin API as typed calls.

One request per call, the admin bearer token read from a file. A replica's
error comes back as the ``KeelError`` its status means (401/403 with the
replica's own message); a replica that cannot be reached is ``Unavailable``
naming the URL. ``keel sessions`` uses it.

>>> async with AgentAdminClient(base_url="http://127.0.0.1:8081", token_file=path) as api:
...     report = await api.live()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from agentkeel.web.admin_http import AdminHttpClient

__all__ = ["DEFAULT_AGENT_URL", "AgentAdminClient"]

DEFAULT_AGENT_URL = "http://127.0.0.1:8081"


class AgentAdminClient(AdminHttpClient):
    """Typed calls to one agent replica's ``/admin/sessions/*`` routes."""

    peer = "the agent server"
    unavailable_code = "replica_unavailable"
    reach_hint = "Is a replica running there (keel up), and is --url right?"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_AGENT_URL,
        token_file: Path,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url, token_file=token_file, timeout_s=timeout_s, transport=transport
        )

    async def live(self, *, started_before: float | None = None) -> dict[str, Any]:
        """``GET /admin/sessions/live``: live sessions by version and by replica; with
        ``started_before`` also ``started_before.count``, those that started before it."""
        query = "" if started_before is None else f"?started_before={started_before!r}"
        return await self._request("GET", f"/admin/sessions/live{query}")

    async def prune(self, *, dry_run: bool = False) -> dict[str, Any]:
        """``POST /admin/sessions/prune``: what the retention purge removed (or would)."""
        return await self._request("POST", "/admin/sessions/prune", {"dry_run": dry_run})

    async def forget(
        self, user_id: str, *, dry_run: bool = False, organization: str | None = None
    ) -> dict[str, Any]:
        """``POST /admin/sessions/forget``: what was removed about ``user_id`` (or would be),
        in ``organization`` only, or without it in every organization."""
        body: dict[str, Any] = {"user_id": user_id, "dry_run": dry_run}
        if organization is not None:
            body["organization"] = organization
        return await self._request("POST", "/admin/sessions/forget", body)
