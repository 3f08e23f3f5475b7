"""The agent server's session-lifecycle admin routes (admin bearer token):

    GET  /admin/sessions/live     live sessions in the shared store, by version and replica;
                                  ?started_before=T also counts those started before T
    POST /admin/sessions/prune    {dry_run?}: purge transcripts past sessions.retention_days
    POST /admin/sessions/forget   {user_id, organization?, dry_run?}: remove a user's
                                  sessions, turns, feedback, budget rows and memory
                                  namespaces (in that organization, or in every one)

``keel sessions live|prune|forget`` call them; draining and blue/green deploys
read ``/admin/sessions/live``. Prune and forget write an audit line naming the
credential (its fingerprint, never the token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.errors import InvalidRequest
from agentkeel.telemetry.audit import audited, credential_id
from agentkeel.web.auth import request_source
from agentkeel.web.bodies import parse_body
from agentkeel.web.errors import endpoint

if TYPE_CHECKING:
    from agentkeel.runtime.service import AgentService

__all__ = ["ForgetBody", "PruneBody", "session_admin_routes"]

ADMIN_CREDENTIAL = "server.admin_token"


class PruneBody(BaseModel):
    """``POST /admin/sessions/prune``."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False


class ForgetBody(BaseModel):
    """``POST /admin/sessions/forget``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    organization: str | None = Field(default=None, min_length=1, max_length=256)
    """Only this organization's user; left out: the user id in every organization."""
    dry_run: bool = False


def session_admin_routes(
    service: Callable[[], AgentService], *, check_admin: Callable[[Request], None]
) -> list[Route]:
    """The routes, over the running service (``service()`` raises 503 while starting)
    and the server's admin check (raises 401/403)."""

    async def live(request: Request) -> Response:
        check_admin(request)
        report = await service().lifecycle.live(
            started_before=_started_before(request.query_params.get("started_before"))
        )
        return JSONResponse(report.to_json())

    async def prune(request: Request) -> Response:
        check_admin(request)
        body = await parse_body(request, PruneBody, empty=b"{}")
        lifecycle = service().lifecycle
        with audited(
            "sessions.prune",
            actor=_actor(request),
            dry_run=body.dry_run,
            retention_days=lifecycle.settings.retention_days,
            source=request_source(request),
        ) as more:
            removed = await lifecycle.purge(dry_run=body.dry_run)
            more.update(removed.to_json())
        return JSONResponse(
            {
                "dry_run": body.dry_run,
                "retention_days": lifecycle.settings.retention_days,
                **removed.to_json(),
            }
        )

    async def forget(request: Request) -> Response:
        check_admin(request)
        body = await parse_body(request, ForgetBody, empty=b"{}")
        the_service = service()
        report = await the_service.lifecycle.forget(
            body.user_id,
            actor=_actor(request),
            dry_run=body.dry_run,
            agent_id=the_service.agent_id,
            organization=body.organization,
            source=request_source(request),
        )
        return JSONResponse(report.to_json())

    def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
        return Route(path, endpoint(handler), methods=[method])

    return [
        route("/admin/sessions/live", live, "GET"),
        route("/admin/sessions/prune", prune, "POST"),
        route("/admin/sessions/forget", forget, "POST"),
    ]


def _started_before(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(
            f"started_before={raw!r} is not a unix time in seconds (e.g. 1767225600.5).",
            code="invalid_query",
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidRequest(f"started_before={raw!r} is not a finite unix time.")
    return value


def _actor(request: Request) -> str:
    """The credential that passed the admin check, by fingerprint."""
    _, _, token = request.headers.get("authorization", "").partition(" ")
    return credential_id(ADMIN_CREDENTIAL, token.strip())
