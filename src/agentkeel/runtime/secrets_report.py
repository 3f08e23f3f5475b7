"""The agent replica's ``/admin/secrets`` routes: which secrets it uses, never values.

A replica uses its providers' platform keys (``models[].api_key_secret`` in the
process's secret source, or ``models[].api_key_file`` with its versions beside
it) and its admin token. ``web/secrets_admin.py`` serves the report and the
refresh; this module only says which secrets a replica has.

>>> routes = replica_secrets_routes(settings, source=source, admin=admin, registry=registry)
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.routing import Route

from agentkeel.config.settings import KeelSettings
from agentkeel.secrets.cache import CachedSecretSource
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.source import SecretSource
from agentkeel.telemetry.metrics import SecretMetrics
from agentkeel.web.auth import AdminToken
from agentkeel.web.secrets_admin import HeldSecrets, secrets_admin_routes

__all__ = ["replica_held_secrets", "replica_secrets_routes"]


def replica_held_secrets(
    settings: KeelSettings,
    *,
    source: SecretSource | None,
    admin: AdminToken,
    registry: CollectorRegistry | None = None,
) -> HeldSecrets:
    """The replica's secrets: each provider's platform key, then the admin token."""
    secrets: list[tuple[str, SecretSource]] = []
    for provider in settings.models:
        if provider.api_key_file is not None:
            file = provider.api_key_file
            secrets.append((file.name, FileSecretSource(root=file.parent)))
        elif provider.api_key_secret is not None and source is not None:
            secrets.append((provider.api_key_secret, source))
    if admin.source is not None:
        secrets.append(admin.source)
    return HeldSecrets(
        service="agent server",
        secrets=secrets,
        due_days=settings.secrets.rotation.due_days,
        metrics=SecretMetrics(registry) if registry is not None else None,
    )


def replica_secrets_routes(
    settings: KeelSettings,
    *,
    source: CachedSecretSource | None,
    admin: AdminToken,
    registry: CollectorRegistry,
) -> list[Route]:
    """``GET /admin/secrets`` and ``POST /admin/secrets/refresh`` for the replica."""
    held = replica_held_secrets(settings, source=source, admin=admin, registry=registry)
    check: Callable[[Request], None] = lambda request: admin.check(  # noqa: E731
        request.headers.get("authorization")
    )
    return secrets_admin_routes(held, check_admin=check, credential="server.admin_token")
