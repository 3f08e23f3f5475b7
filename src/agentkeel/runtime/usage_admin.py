"""The agent server's usage admin routes (admin bearer token), read from the session store:

    GET /admin/usage?top=20&period=day|month[&org=O]
        the top users by tokens in the current UTC day or month, with spend, tokens on
        their own keys and their quota's headroom
    GET /admin/usage/users/{user}?period=day|month[&org=O]
        one user's usage by day and model, and the headroom of their daily and monthly
        quotas (and their organization's); without ``org``, the user without one

Quotas are the live settings' for that user and organization (overrides applied),
looked up without counting as a turn (``LiveSettings.preview``). A query parameter
that is unknown, repeated, empty or out of range is a 422 ``invalid_query`` that
names it (``web/query.py``, as ``/admin/config`` does). ``keel usage top|show``
prints the same reports from the store directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.live import TurnContext
from agentkeel.config.quotas import QuotaSettings
from agentkeel.errors import InvalidRequest, Unavailable
from agentkeel.resilience.windows import PERIODS, Period
from agentkeel.runtime.usage import UsageReader
from agentkeel.runtime.usage_report import MAX_TOP, top_report, user_report
from agentkeel.web.errors import endpoint
from agentkeel.web.query import RouteQuery, route_query

if TYPE_CHECKING:
    from agentkeel.runtime.service import AgentService

__all__ = ["parse_period", "parse_top", "usage_admin_routes"]

DEFAULT_TOP = 20
MAX_NAME_CHARS = 256


def usage_admin_routes(
    service: Callable[[], AgentService],
    *,
    check_admin: Callable[[Request], None],
    quotas: QuotaSettings,
) -> list[Route]:
    """The routes, over the running service (``service()`` raises 503 while starting),
    the server's admin check (raises 401/403) and the process's quotas (used for a user
    when the service resolves no live settings)."""

    def quotas_for(the_service: AgentService) -> Callable[[str, str | None], QuotaSettings]:
        live = the_service.live
        if live is None:
            return lambda user, organization: quotas

        def resolve(user: str, organization: str | None) -> QuotaSettings:
            context = TurnContext(
                user_id=user,
                organization=organization,
                agent_id=the_service.agent_id,
                version=the_service.version,
            )
            return live.preview(context).quotas

        return resolve

    async def top(request: Request) -> Response:
        check_admin(request)
        query = route_query(
            request, allowed=("top", "period", "org"), example="/admin/usage?top=20&period=day"
        )
        the_service = service()
        report = await top_report(
            _reader(the_service),
            period=parse_period(query.text("period")),
            top=parse_top(query.text("top")),
            organization=_organization(query),
            quotas_for=quotas_for(the_service),
            now=the_service.clock.time(),
        )
        return JSONResponse(report)

    async def user(request: Request) -> Response:
        check_admin(request)
        query = route_query(
            request, allowed=("period", "org"), example="/admin/usage/users/bob?period=month"
        )
        the_service = service()
        user_id = request.path_params["user"]
        if not 0 < len(user_id) <= MAX_NAME_CHARS:
            raise InvalidRequest(
                f"user {user_id[:40]!r}… is longer than {MAX_NAME_CHARS} characters; give the "
                "user id the sessions were created with.",
                code="invalid_query",
            )
        organization = _organization(query)
        report = await user_report(
            _reader(the_service),
            user_id,
            organization=organization,
            period=parse_period(query.text("period")),
            quotas=quotas_for(the_service)(user_id, organization),
            now=the_service.clock.time(),
        )
        return JSONResponse(report)

    return [
        Route("/admin/usage", endpoint(top), methods=["GET"]),
        Route("/admin/usage/users/{user}", endpoint(user), methods=["GET"]),
    ]


def parse_period(raw: str | None) -> Period:
    """``day`` (the default) or ``month``; anything else is a 422 naming the choices."""
    if raw is None:
        return "day"
    if raw not in PERIODS:
        raise InvalidRequest(
            f"period={raw!r} is not a quota window; use period=day (today, UTC) or "
            "period=month (this UTC month).",
            code="invalid_query",
        )
    return raw


def parse_top(raw: str | None) -> int:
    """How many users a top report lists: 1 to ``MAX_TOP``, default 20."""
    if raw is None:
        return DEFAULT_TOP
    text = raw.strip()
    value = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= value <= MAX_TOP:
        raise InvalidRequest(
            f"top={raw!r} is not a number of users; give a whole number from 1 to {MAX_TOP}.",
            code="invalid_query",
        )
    return value


def _organization(query: RouteQuery) -> str | None:
    return query.text("org", max_chars=MAX_NAME_CHARS)


def _reader(service: AgentService) -> UsageReader:
    store: Any = service.store
    if not isinstance(store, UsageReader):
        raise Unavailable(
            f"The session store {type(store).__name__} keeps no usage; use the SQLite or "
            "PostgreSQL store (store.url) to read usage and spend.",
            code="usage_unavailable",
        )
    return store
