"""``AdminHttpClient``: the one way a command talks to a service's admin API.

One request per call with the admin bearer token read from a file (reread when
it changes); an error answer comes back as the ``KeelError`` its status means,
a service that cannot be reached or does not answer is ``Unavailable`` naming
the URL and what to check. The replica's and the router's admin clients are
thin subclasses that name their peer and add typed calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from agentkeel.errors import Unavailable
from agentkeel.telemetry.http import make_async_client
from agentkeel.web.auth import BearerTokenFile
from agentkeel.web.peer_errors import error_from_response

__all__ = ["AdminHttpClient"]


class AdminHttpClient:
    """Bearer-token JSON requests to one service; subclasses set the three names below."""

    peer: ClassVar[str] = "the service"
    """How messages name the peer, e.g. 'the router'."""
    unavailable_code: ClassVar[str] = "unavailable"
    reach_hint: ClassVar[str] = "Is it running, and is --url right?"

    def __init__(
        self,
        *,
        base_url: str,
        token_file: Path,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self._token = BearerTokenFile(token_file)
        self.timeout_s = timeout_s
        self._http = make_async_client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s), transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token.value()}"}
        where = f"{self.peer} at {self.base_url}"
        try:
            response = await self._http.request(
                method, path, json=None if body is None else dict(body), headers=headers
            )
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"{where} did not answer {method} {path} within {self.timeout_s:g} s; "
                "check its log.",
                code=self.unavailable_code,
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach {where} ({type(exc).__name__}). {self.reach_hint}",
                code=self.unavailable_code,
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response, peer=where)
        try:
            data = response.json()
        except ValueError:
            raise Unavailable(
                f"{where} answered {method} {path} with something that is not JSON; "
                "is --url right?",
                code="bad_response",
            ) from None
        return data if isinstance(data, dict) else {"value": data}
