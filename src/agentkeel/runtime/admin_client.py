"""``AgentAdminClient``: the agent server's session-lifecycle admin API as typed calls.

One request per call, the admin bearer token read from a file. A replica's
error comes back as the ``KeelError`` its status means (401/403 with the
replica's own message); a replica that cannot be reached is ``Unavailable``
naming the URL. ``keel sessions`` uses it.

>>> async with AgentAdminClient(base_url="http://127.0.0.1:8081", token_file=path) as api:
...     report = await api.live()
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from agentkeel.errors import (
    Unavailable,
)
from agentkeel.telemetry.http import make_async_client
from agentkeel.web.auth import BearerTokenFile
from agentkeel.web.peer_errors import error_from_response

__all__ = ["DEFAULT_AGENT_URL", "AgentAdminClient"]

DEFAULT_AGENT_URL = "http://127.0.0.1:8081"


class AgentAdminClient:
    """Typed calls to one agent replica's ``/admin/sessions/*`` routes."""

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_AGENT_URL,
        token_file: Path,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self._token = BearerTokenFile(token_file)
        self.timeout_s = timeout_s
        self._http = make_async_client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s), transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AgentAdminClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def live(self) -> dict[str, Any]:
        """``GET /admin/sessions/live``: live sessions by version and by replica."""
        return await self._request("GET", "/admin/sessions/live")

    async def prune(self, *, dry_run: bool = False) -> dict[str, Any]:
        """``POST /admin/sessions/prune``: what the retention purge removed (or would)."""
        return await self._request("POST", "/admin/sessions/prune", {"dry_run": dry_run})

    async def forget(self, user_id: str, *, dry_run: bool = False) -> dict[str, Any]:
        """``POST /admin/sessions/forget``: what was removed about ``user_id`` (or would be)."""
        return await self._request(
            "POST", "/admin/sessions/forget", {"user_id": user_id, "dry_run": dry_run}
        )

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token.value()}"}
        try:
            response = await self._http.request(
                method, path, json=None if body is None else dict(body), headers=headers
            )
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"the agent server at {self.base_url} did not answer {method} {path} within "
                f"{self.timeout_s:g} s; check its logs.",
                code="replica_unavailable",
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach the agent server at {self.base_url} ({type(exc).__name__}). Is a "
                "replica running there (keel up), and is --url right?",
                code="replica_unavailable",
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response, peer=f"the agent server at {self.base_url}")
        return _json(response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"error": {"code": "bad_response", "message": response.text[:200]}}
    return data if isinstance(data, dict) else {"value": data}
