"""``RouterAdminClient``: the router's admin API as typed calls (``deploy.types.RouterControl``).

One request per call, the admin bearer token read from a file (reread when
it changes). The router's error answers come back as the ``KeelError`` their
status means; a router that cannot be reached is ``Unavailable`` naming the
URL. The rollout controller, the rollback and ``keel router`` use it.

>>> async with RouterAdminClient(base_url="http://127.0.0.1:8080", token_file=path) as router:
...     await router.put_version("v2", replicas=["http://127.0.0.1:8083"], weight=0)
...     await router.set_weights({"v1": 95, "v2": 5})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from agentkeel.deploy.types import RouterReplica, RouterVersion, SessionPolicy
from agentkeel.web.admin_http import AdminHttpClient

__all__ = ["DEFAULT_ROUTER_URL", "RouterAdminClient", "parse_versions"]

DEFAULT_ROUTER_URL = "http://127.0.0.1:8080"


class RouterAdminClient(AdminHttpClient):
    """Typed calls to a router's ``/admin/*`` routes; satisfies ``RouterControl``."""

    peer = "the router"
    unavailable_code = "router_unavailable"
    reach_hint = "Is it running (keel serve router, or keel up), and is --url right?"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_ROUTER_URL,
        token_file: Path,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url, token_file=token_file, timeout_s=timeout_s, transport=transport
        )

    # -- RouterControl --------------------------------------------------------------------

    async def versions(self) -> tuple[str | None, list[RouterVersion]]:
        return parse_versions(await self.status())

    async def put_version(
        self,
        version: str,
        *,
        replicas: Sequence[str] = (),
        weight: int = 0,
        policy: SessionPolicy = "pinned",
    ) -> None:
        await self._request(
            "PUT",
            f"/admin/versions/{_segment(version)}",
            {"replicas": list(replicas), "weight": weight, "policy": policy},
        )

    async def set_weights(self, weights: Mapping[str, int], *, stable: str | None = None) -> None:
        body: dict[str, Any] = {"weights": dict(weights)}
        if stable is not None:
            body["stable"] = stable
        await self._request("POST", "/admin/weights", body)

    async def retire_version(self, version: str, *, policy: SessionPolicy | None = None) -> None:
        body = {"policy": policy} if policy is not None else {}
        await self._request("POST", f"/admin/versions/{_segment(version)}/retire", body)

    async def remove_version(self, version: str) -> None:
        await self._request("DELETE", f"/admin/versions/{_segment(version)}")

    async def add_replica(self, version: str, url: str) -> None:
        await self._request("POST", "/admin/replicas", {"version": version, "url": url})

    async def remove_replica(self, url: str) -> None:
        await self._request("POST", "/admin/replicas/remove", {"url": url})

    async def drain_replica(self, url: str) -> None:
        await self._request("POST", "/admin/replicas/drain", {"url": url})

    async def pin_stats(self) -> dict[str, int]:
        data = await self.pins()
        return {str(k): int(v) for k, v in dict(data.get("by_version", {})).items()}

    # -- raw answers (for keel router) ------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """``GET /admin/versions`` as the router answered it."""
        return await self._request("GET", "/admin/versions")

    async def pins(self) -> dict[str, Any]:
        """``GET /admin/pins``: ``{total, by_version}``."""
        return await self._request("GET", "/admin/pins")

    async def stats(self) -> dict[str, Any]:
        """``GET /admin/stats``: requests, status codes and latency per version."""
        return await self._request("GET", "/admin/stats")


def parse_versions(data: Mapping[str, Any]) -> tuple[str | None, list[RouterVersion]]:
    """``GET /admin/versions``'s answer as the stable version and ``RouterVersion`` objects."""
    versions = [
        RouterVersion(
            version=str(item["version"]),
            weight=int(item["weight"]),
            policy=item["policy"],
            retired=bool(item["retired"]),
            pinned_sessions=int(item.get("pinned_sessions", 0)),
            replicas=tuple(
                RouterReplica(
                    url=str(replica["url"]),
                    version=str(replica["version"]),
                    ready=bool(replica["ready"]),
                    draining=bool(replica["draining"]),
                    in_flight=int(replica.get("in_flight", 0)),
                )
                for replica in item.get("replicas", ())
            ),
        )
        for item in data.get("versions", ())
    ]
    stable = data.get("stable")
    return (str(stable) if stable is not None else None), versions


def _segment(version: str) -> str:
    return quote(version, safe="")
