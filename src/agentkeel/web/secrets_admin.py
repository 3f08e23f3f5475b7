"""What a service reports of the secrets it uses, for rotation: ``HeldSecrets``.

Every service offers (admin bearer token)::

    GET  /admin/secrets           per secret: path, generations held, current, age, due
    POST /admin/secrets/refresh   reread them now instead of at the cache's next expiry

Never a value: generations and times only. ``keel secrets rotate`` calls the
refresh, then polls the report until every service holds the new generation
(and, after revoking, no longer holds the old one). The same object feeds
``agent_secret_age_seconds{secret}`` and
``agent_secret_rotation_due_timestamp_seconds{secret}`` on the service's
``/metrics``; ``secret`` is one of the configured names (never a per-user path).

>>> held = HeldSecrets(service="agent server", due_days=90,
...     secrets=[("openai_api_key", source), ("admin_token", admin_source)])
>>> held.report()["secrets"][0]["generations"]
[2, 1]
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.errors import KeelError
from agentkeel.secrets.source import Secret, SecretSource
from agentkeel.telemetry.audit import audit, credential_id
from agentkeel.telemetry.metrics import SecretMetrics
from agentkeel.web.auth import bearer_token
from agentkeel.web.errors import endpoint

__all__ = ["HeldSecrets", "RefreshableSource", "secrets_admin_routes"]

logger = logging.getLogger("agentkeel.web.secrets")

DAY_S = 86_400.0


@runtime_checkable
class RefreshableSource(Protocol):
    """A caching source (``CachedSecretSource``): ``refresh(path)`` rereads one path."""

    def refresh(self, path: str) -> Secret | None: ...


class HeldSecrets:
    """The secrets one service uses, each read through its source (see the module doc)."""

    def __init__(
        self,
        *,
        service: str,
        secrets: Sequence[tuple[str, SecretSource]],
        due_days: float = 90.0,
        metrics: SecretMetrics | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.due_days = due_days
        self._secrets = _unique(secrets)
        self._now = now
        if metrics is not None:
            for path, _ in self._secrets:
                metrics.age.labels(path).set_function(functools.partial(self._age, path))
                metrics.due.labels(path).set_function(functools.partial(self._due, path))

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self._secrets]

    def report(self) -> dict[str, Any]:
        """``GET /admin/secrets``: every secret this service uses, without values."""
        now = self._now()
        entries: list[dict[str, Any]] = []
        for path, source in self._secrets:
            entry: dict[str, Any] = {"path": path, "source": source.kind}
            try:
                secret = source.read(path)
            except KeelError as exc:
                entry["error"] = exc.message
                entries.append(entry)
                continue
            if secret is None:
                entry["missing"] = True
                entries.append(entry)
                continue
            current = secret.current
            entry.update(
                generations=list(secret.generations),
                current=current.generation,
                age_s=round(secret.age_s(now), 3),
                due_at=self._due_of(secret),
                versions=[
                    {
                        "generation": v.generation,
                        "created_at": v.created_at,
                        "activated_at": v.activated_at,
                    }
                    for v in secret.versions
                ],
            )
            entries.append(entry)
        return {"service": self.service, "secrets": entries}

    def refresh(self) -> list[str]:
        """Reread every secret from its source now; the paths that were reread."""
        refreshed: list[str] = []
        for path, source in self._secrets:
            if isinstance(source, RefreshableSource):
                try:
                    source.refresh(path)
                except KeelError as exc:
                    logger.warning("secret %s not refreshed: %s", path, exc.message)
                    continue
                refreshed.append(path)
        return refreshed

    def _read(self, path: str) -> Secret | None:
        for known, source in self._secrets:
            if known == path:
                try:
                    return source.read(path)
                except KeelError:
                    return None
        return None

    def _due_of(self, secret: Secret) -> float:
        current = secret.current
        since = current.activated_at if current.activated_at is not None else current.created_at
        return since + self.due_days * DAY_S

    def _age(self, path: str) -> float:
        secret = self._read(path)
        return secret.age_s(self._now()) if secret is not None else float("nan")

    def _due(self, path: str) -> float:
        secret = self._read(path)
        return self._due_of(secret) if secret is not None else float("nan")


def secrets_admin_routes(
    held: HeldSecrets, *, check_admin: Callable[[Request], None], credential: str
) -> list[Route]:
    """The two routes over ``held``, behind the service's admin check (401/403);
    ``credential`` names the admin token in the audit line of a refresh."""

    async def report(request: Request) -> Response:
        check_admin(request)
        return JSONResponse(held.report())

    async def refresh(request: Request) -> Response:
        check_admin(request)
        refreshed = held.refresh()
        token = bearer_token(request.headers.get("authorization")) or ""
        audit(
            "secrets.refresh",
            actor=credential_id(credential, token),
            service=held.service,
            secrets=refreshed,
        )
        return JSONResponse({**held.report(), "refreshed": refreshed})

    return [
        Route("/admin/secrets", endpoint(report), methods=["GET"]),
        Route("/admin/secrets/refresh", endpoint(refresh), methods=["POST"]),
    ]


def _unique(secrets: Sequence[tuple[str, SecretSource]]) -> list[tuple[str, SecretSource]]:
    seen: set[str] = set()
    out: list[tuple[str, SecretSource]] = []
    for path, source in secrets:
        if path not in seen:
            seen.add(path)
            out.append((path, source))
    return out
