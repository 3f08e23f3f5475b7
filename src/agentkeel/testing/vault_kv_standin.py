"""A stand-in for HashiCorp Vault's KV v2 HTTP API, for tests. It is not Vault.

No Vault or OpenBao server can be installed from a package registry, so tests
of ``VaultSecretSource`` talk to this instead: a small Starlette app on a real
loopback socket that answers the calls hvac makes, the way Vault answers them:

    GET/POST/PUT  /v1/<mount>/data/<path>        read / write a KV v2 entry
    GET/LIST      /v1/<mount>/metadata/<path>    metadata / list keys
    DELETE        /v1/<mount>/metadata/<path>    delete the entry and all versions
    POST          /v1/auth/<auth_mount>/login    Kubernetes login: role + JWT → token

A missing or unknown ``X-Vault-Token`` is a 403 ``permission denied`` and a
missing path a 404, as in Vault. No policies, leases, seal or namespaces.

>>> with VaultKVStandin(tokens={"root-token"}).serving() as vault:
...     VaultSecretSource(settings=VaultSettings(url=vault.url, token_file=...))
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.testing._serving import serve_in_thread

__all__ = ["VaultKVStandin"]


class VaultKVStandin:
    """The stand-in's state: valid tokens, Kubernetes roles, KV entries per mount."""

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (),
        kubernetes_roles: Mapping[str, str] | None = None,
        mounts: Iterable[str] = ("secret",),
        auth_mount: str = "kubernetes",
    ) -> None:
        self.url = ""
        self.auth_mount = auth_mount
        self.kubernetes_roles = dict(kubernetes_roles or {})
        """Role -> the one service-account JWT it accepts."""
        self._lock = threading.Lock()
        self._tokens = set(tokens)
        self._mounts = set(mounts)
        self._entries: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.logins = 0
        self.requests = 0

    def revoke_tokens(self) -> None:
        """Every token stops working (as when they expire): the next call gets 403."""
        with self._lock:
            self._tokens.clear()

    def add_token(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def put(self, mount: str, path: str, data: dict[str, Any]) -> None:
        """Write an entry directly, as an operator's ``vault kv put`` would."""
        with self._lock:
            self._write(mount, path, data)

    def get(self, mount: str, path: str) -> dict[str, Any] | None:
        """The latest data of an entry, or ``None``."""
        with self._lock:
            versions = self._entries.get((mount, path))
            return dict(versions[-1]["data"]) if versions else None

    @contextmanager
    def serving(self) -> Iterator[VaultKVStandin]:
        """Serve on a free loopback port until the block ends (``url`` is set meanwhile).
        The h11 parser: hvac lists keys with the LIST method, which httptools refuses."""
        with serve_in_thread(self.app(), what="Vault KV stand-in", http="h11") as url:
            self.url = url
            try:
                yield self
            finally:
                self.url = ""

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE", "LIST"]
        return Starlette(
            routes=[
                Route("/v1/auth/{auth_mount}/login", self._login, methods=["POST", "PUT"]),
                Route("/v1/{mount}/{kind}/{path:path}", self._kv, methods=methods),
            ]
        )

    async def _login(self, request: Request) -> Response:
        self.requests += 1
        body = await request.json()
        role, jwt = body.get("role"), body.get("jwt")
        if (
            request.path_params["auth_mount"] != self.auth_mount
            or role not in self.kubernetes_roles
            or not secrets.compare_digest(str(jwt), self.kubernetes_roles[role])
        ):
            return _errors(403, "permission denied")
        token = f"hvs.standin-{secrets.token_hex(8)}"
        with self._lock:
            self._tokens.add(token)
            self.logins += 1
        return JSONResponse(
            {
                "auth": {
                    "client_token": token,
                    "accessor": "standin",
                    "policies": ["default"],
                    "lease_duration": 3600,
                    "renewable": True,
                }
            }
        )

    async def _kv(self, request: Request) -> Response:
        self.requests += 1
        mount, kind = request.path_params["mount"], request.path_params["kind"]
        path = request.path_params["path"].strip("/")
        with self._lock:
            authorized = request.headers.get("x-vault-token", "") in self._tokens
        if not authorized:
            return _errors(403, "permission denied")
        if mount not in self._mounts or kind not in ("data", "metadata"):
            return _errors(404, f"no handler for route '{mount}/{kind}/{path}'")
        method = request.method
        body = await request.json() if method in ("POST", "PUT") else {}
        if kind == "metadata" and (method == "LIST" or request.query_params.get("list")):
            return self._list(mount, path)
        with self._lock:
            versions = self._entries.get((mount, path))
            if kind == "data" and method == "GET":
                if not versions:
                    return _errors(404)
                latest = versions[-1]
                return JSONResponse({"data": {"data": latest["data"], "metadata": _meta(latest)}})
            if kind == "data" and method in ("POST", "PUT"):
                if not isinstance(body.get("data"), dict):
                    return _errors(400, "no data provided")
                written = self._write(mount, path, body["data"])
                return JSONResponse({"data": _meta(written)})
            if kind == "metadata" and method == "GET":
                if not versions:
                    return _errors(404)
                return JSONResponse(
                    {
                        "data": {
                            "current_version": versions[-1]["version"],
                            "versions": {str(v["version"]): _meta(v) for v in versions},
                        }
                    }
                )
            if kind == "metadata" and method == "DELETE":
                self._entries.pop((mount, path), None)
                return Response(status_code=204)
        return _errors(405, "unsupported operation")

    def _list(self, mount: str, folder: str) -> Response:
        prefix = f"{folder}/" if folder else ""
        keys: set[str] = set()
        with self._lock:
            for entry_mount, path in self._entries:
                if entry_mount == mount and path.startswith(prefix):
                    head, slash, _ = path[len(prefix) :].partition("/")
                    keys.add(head + slash)
        if not keys:
            return _errors(404)
        return JSONResponse({"data": {"keys": sorted(keys)}})

    def _write(self, mount: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
        versions = self._entries.setdefault((mount, path.strip("/")), [])
        entry = {
            "data": dict(data),
            "version": len(versions) + 1,
            "created_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        versions.append(entry)
        return entry


def _meta(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "created_time": entry["created_time"],
        "custom_metadata": None,
        "deletion_time": "",
        "destroyed": False,
        "version": entry["version"],
    }


def _errors(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status)
