"""``MemoryApiClient``: the memory server's HTTP API as typed calls, nothing more.

No breaker, no outbox, no retries: every call is one request, and every
failure is a ``KeelError`` — the server's own error (its status and code, e.g.
409 ``memory_exists`` or 503 ``memory_fenced``), or ``MemoryUnavailable`` when
the server could not be reached or did not answer in time. ``keel memory`` and
``keel snapshot`` use it directly; agents use ``MemoryClient``, which adds the
guards and the outbox on top.

The bearer token is read from a file and read again when the file changes, so
rotating it needs no restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from agentkeel.errors import (
    InvalidRequest,
    KeelError,
    MemoryUnavailable,
)
from agentkeel.memory.planner import check_namespace
from agentkeel.memory.store import MemoryRecord, SearchHit
from agentkeel.telemetry.http import make_async_client
from agentkeel.web.auth import BearerTokenFile
from agentkeel.web.peer_errors import error_from_response as peer_error

__all__ = ["BearerTokenFile", "MemoryApiClient", "error_from_response"]

DEFAULT_URL = "http://127.0.0.1:8788"
ERASE_TIMEOUT_S = 300.0
"""How long ``delete_namespace`` waits: the server deletes a large namespace in batches."""


def error_from_response(response: httpx.Response, *, base_url: str) -> KeelError:
    """The ``KeelError`` for a memory server error response (its status, code and message)."""
    return peer_error(
        response, peer=f"memory server ({base_url})", server_error_code="memory_server_error"
    )


class MemoryApiClient:
    """Typed calls to one memory server.

    >>> api = MemoryApiClient(base_url="http://127.0.0.1:8788", token_file=Path("token"))
    >>> hits = await api.search("agent:support/user:42", "tea")
    >>> await api.aclose()
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_URL,
        token_file: Path | None = None,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = BearerTokenFile(token_file) if token_file is not None else None
        self._http = make_async_client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> MemoryApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the one request ------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send one request; the JSON object answered, or the ``KeelError`` it means.
        ``timeout_s`` overrides the client's read timeout for this one request."""
        headers: dict[str, str] = {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.value()}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self._http.request(
                method,
                path,
                json=None if json is None else dict(json),
                params=_params(params),
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s),
            )
        except httpx.TimeoutException as exc:
            raise MemoryUnavailable(
                f"the memory server at {self.base_url} did not answer {method} {path} within "
                f"{timeout_s or self.timeout_s:g}s ({type(exc).__name__}). It may be "
                "overloaded or stuck; check its /health and logs.",
                retry_after=1.0,
            ) from exc
        except httpx.TransportError as exc:
            raise MemoryUnavailable(
                f"cannot reach the memory server at {self.base_url} ({type(exc).__name__}: "
                f"{exc or 'no detail'}). Is it running (keel serve memory) and is the URL "
                "right?",
                retry_after=1.0,
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response, base_url=self.base_url)
        try:
            data = response.json()
        except ValueError as exc:
            raise KeelError(
                f"the memory server at {self.base_url} answered {method} {path} with "
                f"{response.status_code} but not JSON; is that URL really a memory server?",
                code="memory_bad_response",
            ) from exc
        if not isinstance(data, dict):
            raise KeelError(
                f"the memory server at {self.base_url} answered {method} {path} with JSON "
                "that is not an object; is that URL really a memory server?",
                code="memory_bad_response",
            )
        return data

    # --- memories -----------------------------------------------------------

    async def create(
        self,
        namespace: str,
        content: str,
        *,
        tags: Sequence[str] = (),
        importance: float = 0.5,
        metadata: Mapping[str, Any] | None = None,
        memory_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/memories``: ``{memory, seq, replayed}``."""
        body: dict[str, Any] = {
            "namespace": namespace,
            "content": content,
            "tags": list(tags),
            "importance": importance,
            "metadata": dict(metadata or {}),
        }
        if memory_id is not None:
            body["id"] = memory_id
        return await self.request(
            "POST", "/v1/memories", json=body, idempotency_key=idempotency_key
        )

    async def get(self, memory_id: str) -> MemoryRecord:
        """``GET /v1/memories/{id}``; ``NotFound`` when absent or not readable."""
        data = await self.request("GET", f"/v1/memories/{_segment(memory_id)}")
        return MemoryRecord.from_json(data["memory"])

    async def update(
        self,
        memory_id: str,
        fields: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``PATCH /v1/memories/{id}`` with ``fields`` (content, tags, importance,
        metadata, version): ``{memory, seq, replayed}``."""
        return await self.request(
            "PATCH",
            f"/v1/memories/{_segment(memory_id)}",
            json=fields,
            idempotency_key=idempotency_key,
        )

    async def delete(
        self, memory_id: str, *, version: int | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``DELETE /v1/memories/{id}``: ``{deleted, seq, replayed}``."""
        return await self.request(
            "DELETE",
            delete_path(memory_id, version=version),
            idempotency_key=idempotency_key,
        )

    async def search(
        self,
        namespace: str,
        query: str | None = None,
        *,
        limit: int = 10,
        tags: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
    ) -> list[SearchHit]:
        """``GET /v1/memories``: ranked hits (or the newest memories without a query)."""
        params: list[tuple[str, Any]] = [("namespace", namespace), ("limit", limit)]
        if query:
            params.append(("q", query))
        if tags:
            params.append(("tags", ",".join(tags)))
        if since is not None:
            params.append(("since", since))
        if until is not None:
            params.append(("until", until))
        data = await self.request("GET", "/v1/memories", params=params)
        return [
            SearchHit(
                memory=MemoryRecord.from_json(item["memory"]),
                score=None if item.get("score") is None else float(item["score"]),
            )
            for item in data["results"]
        ]

    async def delete_namespace(
        self, namespace: str, *, timeout_s: float = ERASE_TIMEOUT_S
    ) -> dict[str, Any]:
        """``DELETE /v1/namespaces/{namespace}``: ``{namespace, deleted, seq}``; every
        memory in it is deleted (the log keeps their history). 0 for an empty one.

        The namespace travels percent-encoded, ``/`` included, so no client or proxy
        can fold ``..`` segments into another namespace's path."""
        check_namespace(namespace)
        return await self.request(
            "DELETE", f"/v1/namespaces/{quote(namespace, safe=':@')}", timeout_s=timeout_s
        )

    # --- operations (admin token) ---------------------------------------------

    async def integrity(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/integrity")

    async def create_snapshot(self, *, label: str = "", kind: str = "manual") -> dict[str, Any]:
        return await self.request("POST", "/v1/snapshots", json={"label": label, "kind": kind})

    async def list_snapshots(self) -> list[dict[str, Any]]:
        data = await self.request("GET", "/v1/snapshots")
        return list(data["snapshots"])

    async def verify_snapshot(self, snapshot_id: str, *, deep: bool = False) -> dict[str, Any]:
        params = {"deep": "true"} if deep else None
        return await self.request(
            "POST", f"/v1/snapshots/{_segment(snapshot_id)}/verify", params=params
        )

    async def prune_snapshots(self, *, dry_run: bool = False) -> dict[str, Any]:
        params = {"dry_run": "true"} if dry_run else None
        return await self.request("POST", "/v1/snapshots:prune", params=params)

    async def restore(
        self,
        *,
        snapshot_id: str | None = None,
        at: str | float | None = None,
        seq: int | None = None,
        reason: str = "point-in-time restore",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        for key, value in (("snapshot_id", snapshot_id), ("at", at), ("seq", seq)):
            if value is not None:
                body[key] = value
        return await self.request("POST", "/v1/restore", json=body)

    async def list_quarantines(self, *, events: bool = False) -> list[dict[str, Any]]:
        params = {"events": "true"} if events else None
        data = await self.request("GET", "/v1/quarantine", params=params)
        return list(data["quarantines"])

    async def replay_quarantine(self, quarantine_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/v1/quarantine/{_segment(quarantine_id)}/replay")

    async def raise_fence(self, reason: str = "operator fence") -> dict[str, Any]:
        return await self.request("POST", "/admin/fence", json={"reason": reason})

    async def lift_fence(self) -> dict[str, Any]:
        return await self.request("DELETE", "/admin/fence")


def delete_path(memory_id: str, *, version: int | None = None) -> str:
    """The path of a delete, with the optimistic version when given."""
    path = f"/v1/memories/{_segment(memory_id)}"
    return path if version is None else f"{path}?version={version}"


def _segment(value: str) -> str:
    # Ids are restricted to URL-safe characters by the server; refuse anything that
    # would change the path rather than escape it silently.
    if not value or "/" in value or "?" in value or "#" in value or value in (".", ".."):
        raise InvalidRequest(f"{value!r} is not a valid id; ids contain no '/', '?' or '#'.")
    return value


def _params(
    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> httpx.QueryParams | None:
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    return httpx.QueryParams([(str(key), str(value)) for key, value in items])
