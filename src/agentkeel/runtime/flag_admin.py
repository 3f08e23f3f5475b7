"""``GET /admin/flags`` on the agent replica (admin bearer token): the feature flags in
force here and whether the flag file is the one in force::

    {"source": "file", "file": ".keel/flags.json", "valid": false,
     "error": ".keel/flags.json: the flag file is refused (1 problem): ...",
     "applied_at": "2026-12-01T12:00:00+00:00", "sha256": "3f2a...",
     "flags": {"agent.model_chain": {"state": "ENABLED", "default_variant": "standard",
                                     "variants": {...}, "targeting": true}}}

With ``flags.source: none`` (or live layers passed to ``create_app``) the source is
``none`` and there are no flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.feature_flags import FeatureFlags
from agentkeel.web.errors import endpoint

__all__ = ["flag_admin_routes", "flags_report"]


def flags_report(flags: FeatureFlags | None) -> dict[str, Any]:
    """The body of ``GET /admin/flags``."""
    if flags is None:
        return {
            "source": "none",
            "file": None,
            "valid": True,
            "error": None,
            "applied_at": None,
            "sha256": None,
            "flags": {},
        }
    return flags.report()


def flag_admin_routes(
    flags: FeatureFlags | None, *, check_admin: Callable[[Request], None]
) -> list[Route]:
    """The route, behind the server's admin check (raises 401/403)."""

    async def show(request: Request) -> Response:
        check_admin(request)
        return JSONResponse(flags_report(flags))

    return [Route("/admin/flags", endpoint(show), methods=["GET"])]
