"""The agent server's configuration admin route (admin bearer token):

    GET /admin/config?user=U[&org=O][&task=T]   the live settings in force for that user
                                                now, each with the layer it came from

``{user, organization, task, values: {key: {value, source, detail}}, overrides}``:
``source`` is ``default``, ``file``, ``overlay``, ``env``, ``cli`` (or ``settings``
when the replica was not told), ``flag``, ``org`` or ``user``; ``detail`` the
flag's variant or the override's entry. ``overrides`` says which overrides file
the replica watches and whether its latest content is the one in force.

Looking is not a turn: flag evaluations are not counted (``LiveSettings.preview``).
The query is checked as ``/admin/usage``'s is (``web/query.py``): an unknown,
repeated, empty or overlong parameter is a 422 ``invalid_query``.
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
from agentkeel.web.errors import endpoint
from agentkeel.web.query import route_query

__all__ = ["config_admin_routes"]

PARAMS = ("user", "org", "task")
EXAMPLE = "/admin/config?user=bob&org=acme&task=billing"


def config_admin_routes(
    live: LiveSettings,
    *,
    check_admin: Callable[[Request], None],
    overrides: OverridesLayer | None = None,
) -> list[Route]:
    """The route over the replica's live settings and its admin check (raises 401/403)."""

    async def config(request: Request) -> Response:
        check_admin(request)
        query = route_query(request, allowed=PARAMS, example=EXAMPLE)
        user = query.text("user", required=True)
        assert user is not None
        organization = query.text("org")
        task = query.text("task")
        turn = settings_for_user(
            live, user=user, organization=organization, task=task, counted=False
        )
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
