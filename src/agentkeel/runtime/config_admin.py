"""The agent server's configuration admin route (admin bearer token):

    GET /admin/config?user=U[&org=O][&task=T]   the live settings in force for that user
                                                now, each with the layer it came from

``{user, organization, task, values: {key: {value, source, detail}}, overrides}``:
``source`` is ``default``, ``file``, ``overlay``, ``env``, ``cli`` (or ``settings``
when the replica was not told), ``flag``, ``org`` or ``user``; ``detail`` the
flag's variant or the override's entry. ``overrides`` says which overrides file
the replica watches and whether its latest content is the one in force.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.live import LiveSettings
from agentkeel.config.live_view import live_values_json, settings_for_user
from agentkeel.config.overrides import OverridesLayer
from agentkeel.errors import InvalidRequest
from agentkeel.web.errors import endpoint

__all__ = ["config_admin_routes"]

MAX_PARAM_CHARS = 256


def config_admin_routes(
    live: LiveSettings,
    *,
    check_admin: Callable[[Request], None],
    overrides: OverridesLayer | None = None,
) -> list[Route]:
    """The route over the replica's live settings and its admin check (raises 401/403)."""

    async def config(request: Request) -> Response:
        check_admin(request)
        user = _param(request, "user", required=True)
        assert user is not None
        organization = _param(request, "org")
        task = _param(request, "task")
        turn = settings_for_user(live, user=user, organization=organization, task=task)
        body: dict[str, Any] = {
            "user": user,
            "organization": organization,
            "task": task,
            "values": live_values_json(turn),
        }
        if overrides is not None:
            body["overrides"] = {
                "file": str(overrides.path),
                "valid": overrides.valid,
                "error": overrides.error,
                "applied_at": overrides.applied_at,
            }
        return JSONResponse(body)

    return [Route("/admin/config", endpoint(config), methods=["GET"])]


def _param(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name) or None
    if value is None and required:
        raise InvalidRequest(
            f"?{name}= is required: the user whose settings to show "
            "(e.g. /admin/config?user=bob&org=acme&task=billing).",
            code="invalid_query",
        )
    if value is not None and len(value) > MAX_PARAM_CHARS:
        raise InvalidRequest(
            f"?{name}= is {len(value)} characters long; at most {MAX_PARAM_CHARS} are allowed.",
            code="invalid_query",
        )
    return value
