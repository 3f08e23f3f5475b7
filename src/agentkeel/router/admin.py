"""The router's admin API (``/admin/*``): versions, weights, replicas, pins, stats.

Every route needs the admin bearer token (``web/auth.py``'s ``AdminToken``:
401 without one, 403 for a wrong one or when none is configured), and every
change writes one audit line naming the credential (never the token). Changes
go through ``RouterApp.mutate``: a compare-and-set on the stored table, so
routers sharing Redis never lose one another's changes. Mutations answer
with the table as ``GET /admin/versions`` shows it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentkeel.deploy.types import SessionPolicy
from agentkeel.errors import InvalidRequest, KeelError, NotFound, RequestError
from agentkeel.router import table as tables
from agentkeel.router.connection import ClientConnection, Request
from agentkeel.router.responses import json_response, keel_error_response, router_error
from agentkeel.telemetry.audit import audit, credential_id
from agentkeel.web.auth import bearer_token

if TYPE_CHECKING:
    from agentkeel.router.app import RouterApp

__all__ = ["RouterAdmin"]

logger = logging.getLogger("agentkeel.router.admin")

ADMIN_CREDENTIAL = "router.admin_token"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PutVersionBody(_Body):
    replicas: list[str] = Field(default_factory=list)
    weight: int = 0
    policy: SessionPolicy = "pinned"


class WeightsBody(_Body):
    weights: dict[str, int] = Field(default_factory=dict)
    stable: str | None = None


class RetireBody(_Body):
    policy: SessionPolicy | None = None


class ReplicaBody(_Body):
    version: str
    url: str


class UrlBody(_Body):
    url: str


_Route = Callable[[Request, str, list[str]], Awaitable[tuple[int, Any]]]


class RouterAdmin:
    """Answers ``/admin/*`` on the router's port."""

    def __init__(self, app: RouterApp) -> None:
        self.app = app

    async def handle(self, client: ClientConnection, request: Request) -> None:
        try:
            actor = self._authorize(request)
            where = {
                "source": _peer(client),
                "correlation_id": request.correlation_id.decode("latin-1"),
            }
            status, data = await self._dispatch(request, actor, where)
            payload = json_response(
                status, data, headers=request.id_header, keep_alive=request.keep_alive
            )
        except KeelError as exc:
            payload = keel_error_response(
                exc, headers=request.id_header, keep_alive=request.keep_alive
            )
        except Exception:
            logger.exception("router admin request failed")
            payload = router_error(
                500,
                "internal_error",
                "The router failed on this admin request; its log has the details under "
                f"correlation id {request.correlation_id.decode('latin-1')}.",
                headers=request.id_header,
                keep_alive=request.keep_alive,
            )
        client.write(payload)

    def _authorize(self, request: Request) -> str:
        header = request.authorization.decode("latin-1") if request.authorization else None
        self.app.admin_token.check(header)
        token = bearer_token(header) or ""
        return credential_id(ADMIN_CREDENTIAL, token)

    async def _dispatch(
        self, request: Request, actor: str, where: dict[str, Any]
    ) -> tuple[int, Any]:
        method = request.method.decode("latin-1")
        parts = [unquote(part) for part in request.path.decode("latin-1").split("/")[2:]]
        match method, parts:
            case "GET", ["versions"]:
                return 200, await self.app.versions_report()
            case "PUT", ["versions", version]:
                body = _parse(request, PutVersionBody)
                return await self._change(
                    "router.put_version",
                    actor,
                    where,
                    lambda doc: tables.put_version(
                        doc,
                        version,
                        replicas=body.replicas,
                        weight=body.weight,
                        policy=body.policy,
                    ),
                    version=version,
                    weight=body.weight,
                    policy=body.policy,
                    replicas=body.replicas,
                )
            case "DELETE", ["versions", version]:
                return await self._change(
                    "router.remove_version",
                    actor,
                    where,
                    lambda doc: tables.remove_version(doc, version),
                    version=version,
                    after=lambda: self.app.pins.drop_version(version),
                )
            case "POST", ["versions", version, "retire"]:
                retire = _parse(request, RetireBody, empty_ok=True)
                return await self._change(
                    "router.retire_version",
                    actor,
                    where,
                    lambda doc: tables.retire_version(doc, version, policy=retire.policy),
                    version=version,
                    policy=retire.policy,
                )
            case "POST", ["weights"]:
                weights = _parse(request, WeightsBody)
                return await self._change(
                    "router.set_weights",
                    actor,
                    where,
                    lambda doc: tables.set_weights(doc, weights.weights, stable=weights.stable),
                    weights=weights.weights,
                    stable=weights.stable,
                )
            case "POST", ["replicas"]:
                replica = _parse(request, ReplicaBody)
                return await self._change(
                    "router.add_replica",
                    actor,
                    where,
                    lambda doc: tables.add_replica(doc, replica.version, replica.url),
                    version=replica.version,
                    url=replica.url,
                )
            case "POST", ["replicas", "remove"]:
                target = _parse(request, UrlBody)
                return await self._change(
                    "router.remove_replica",
                    actor,
                    where,
                    lambda doc: tables.remove_replica(doc, target.url),
                    url=target.url,
                )
            case "POST", ["replicas", "drain"]:
                target = _parse(request, UrlBody)
                return await self._change(
                    "router.drain_replica",
                    actor,
                    where,
                    lambda doc: tables.drain_replica(doc, target.url),
                    url=target.url,
                )
            case "GET", ["pins"]:
                counts = await self.app.pin_counts()
                return 200, {"total": sum(counts.values()), "by_version": counts}
            case "GET", ["secrets"]:
                return 200, self.app.held_secrets.report()
            case "POST", ["secrets", "refresh"]:
                refreshed = self.app.held_secrets.refresh()
                audit("secrets.refresh", actor=actor, service="router", secrets=refreshed)
                return 200, {**self.app.held_secrets.report(), "refreshed": refreshed}
            case "GET", ["stats"]:
                stats = self.app.metrics.stats
                return 200, {"versions": {name: s.to_dict() for name, s in stats.items()}}
        known = {"versions", "weights", "replicas", "pins", "stats", "secrets"}
        if parts and parts[0] in known:
            raise RequestError(
                f"{method} is not allowed on {request.path.decode('latin-1')}; see the router's "
                "admin API in the README",
                code="method_not_allowed",
            )
        raise NotFound(
            f"No admin route {method} {request.path.decode('latin-1')}. Routes: /admin/versions, "
            "/admin/weights, /admin/replicas, /admin/pins, /admin/stats, /admin/secrets."
        )

    async def _change(
        self,
        action: str,
        actor: str,
        where: dict[str, Any],
        change: Callable[[tables.TableDoc], tables.TableDoc],
        *,
        after: Callable[[], Awaitable[int]] | None = None,
        **details: Any,
    ) -> tuple[int, Any]:
        shown = {key: value for key, value in details.items() if value is not None}
        try:
            doc = await self.app.mutate(change)
            if after is not None:
                shown["pins_dropped"] = await after()
        except KeelError as exc:
            audit(action, actor=actor, outcome=exc.code, **shown, **where)
            raise
        audit(action, actor=actor, revision=doc.revision, **shown, **where)
        return 200, await self.app.versions_report()


def _peer(client: ClientConnection) -> str | None:
    transport = client.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


_Model = TypeVar("_Model", bound=BaseModel)


def _parse(request: Request, model: type[_Model], *, empty_ok: bool = False) -> _Model:
    """The JSON body as ``model``; 422 naming the field for anything else."""
    if not request.body.strip():
        if empty_ok:
            return model()
        raise InvalidRequest("this admin call needs a JSON body", code="invalid_body")
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}", code="invalid_body") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}", code="invalid_body") from None
