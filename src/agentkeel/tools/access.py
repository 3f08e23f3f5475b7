"""Who may call the tool server, and which tools: bearer tokens from a tokens file.

The tokens file (YAML or JSON, from ``tools.server.tokens_file`` or
``secrets_dir/tools_tokens``; never an environment value) maps each token to
the tools it may list and call, as exact names or shell-style patterns::

    tokens:
      "3f9c…":
        name: agent-replicas
        tools: ["*"]
      "77ab…":
        name: notebook
        tools: [calculator, current_time]

``McpAuth`` wraps the MCP endpoint: a request without a known token is 401, a
``tools/call`` of a tool the token is not granted is 403, both as JSON-RPC
errors an MCP client shows as they are. The file is read again when it
changes. A token authenticates the calling service only; whom a call acts for
is the signed caller assertion in its ``_meta`` (``tools/server.py``).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentkeel.config.tools import ToolServerSettings
from agentkeel.errors import Forbidden, KeelError, Unauthorized
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.web.auth import TokensFile, bearer_token, parse_token_grants
from agentkeel.web.bodies import read_body

SCOPE_KEY = "agentkeel.tool_caller"
"""ASGI scope key under which ``McpAuth`` leaves the authenticated ``ToolCaller``."""

JSONRPC_UNAUTHORIZED = -32001
JSONRPC_FORBIDDEN = -32003
JSONRPC_INVALID = -32600


class _ToolGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    tools: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolCaller:
    """The service behind a token: its name (for logs) and the tools it may use."""

    name: str
    tools: tuple[str, ...] = ()

    def may_call(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)


def parse_tool_tokens(text: str, *, source: str) -> dict[str, ToolCaller]:
    """Callers by SHA-256 of their token, from the tool server's tokens file."""
    grants = parse_token_grants(
        text,
        source=source,
        what="tool server tokens file",
        grant=_ToolGrant,
        shape="{tools: [...]}",
    )
    return {
        digest: ToolCaller(name=grant.name or f"token-{digest[:8]}", tools=tuple(grant.tools))
        for digest, grant in grants.items()
    }


class ToolAccess:
    """Turns an ``Authorization`` header into a ``ToolCaller``."""

    def __init__(self, *, settings: ToolServerSettings, secrets: SecretResolver) -> None:
        self._tokens = TokensFile(
            resolver=secrets,
            name=settings.tokens_secret,
            file=settings.tokens_file,
            parse=lambda text, source: parse_tool_tokens(text, source=source),
        )

    @property
    def where(self) -> str:
        path = self._tokens.path
        return f"'{path}'" if path is not None else "a file named by tools.server.tokens_file"

    def configured(self) -> bool:
        """Whether any token is configured. Raises ``ConfigError`` for a broken file, so a
        server checking this at startup stops before it listens."""
        return bool(self._tokens.entries())

    def authenticate(self, authorization: str | None) -> ToolCaller:
        """The caller for ``Authorization: Bearer <token>``; 401 when missing or unknown."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "the tool server needs the header 'Authorization: Bearer <token>' on every MCP "
                f"request; the tokens are in the tool server's tokens file ({self.where}).",
                code="token_missing",
            )
        if not self._tokens.entries():
            raise Unauthorized(
                "the tool server has no tokens configured, so it refuses every MCP request. "
                f"Put a tokens file at {self.where} (or set tools.server.tokens_file).",
                code="tokens_not_configured",
            )
        caller = self._tokens.lookup(token)
        if caller is None:
            raise Unauthorized(
                "this bearer token is not in the tool server's tokens file; check the token, "
                "or ask an operator whether it was rotated.",
                code="token_invalid",
            )
        return caller


def tool_forbidden(caller: ToolCaller, tool: str) -> Forbidden:
    return Forbidden(
        f"token '{caller.name}' may not call the tool '{tool}'. Ask an operator to add it (or a "
        "pattern matching it) to the token's tools list in the tool server's tokens file.",
        code="tool_forbidden",
    )


class McpAuth:
    """ASGI wrapper of the MCP endpoint: authenticate, check the tools called, pass on."""

    def __init__(self, app: ASGIApp, *, access: ToolAccess) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            caller = self.access.authenticate(request.headers.get("authorization"))
            body = await read_body(request) if request.method == "POST" else None
        except KeelError as exc:
            await _jsonrpc_error(exc, None)(scope, receive, send)
            return
        scope[SCOPE_KEY] = caller
        if body is None:
            await self.app(scope, receive, send)
            return
        for request_id, tool in _called_tools(body):
            if not caller.may_call(tool):
                await _jsonrpc_error(tool_forbidden(caller, tool), request_id)(scope, receive, send)
                return
        await self.app(scope, _replaying(body, receive), send)


def caller_of(request: Any) -> ToolCaller | None:
    """The ``ToolCaller`` ``McpAuth`` authenticated for ``request`` (a Starlette request)."""
    scope = getattr(request, "scope", None)
    found = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return found if isinstance(found, ToolCaller) else None


def _called_tools(body: bytes) -> Iterator[tuple[Any, str]]:
    """(request id, tool name) of every ``tools/call`` in a JSON-RPC body. A body that is
    not JSON is left to the MCP server, which answers it with a parse error."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return
    for message in parsed if isinstance(parsed, list) else [parsed]:
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            continue
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        yield message.get("id"), name if isinstance(name, str) else ""


def _replaying(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _jsonrpc_error(exc: KeelError, request_id: Any) -> JSONResponse:
    code = {401: JSONRPC_UNAUTHORIZED, 403: JSONRPC_FORBIDDEN}.get(exc.status, JSONRPC_INVALID)
    headers = {"WWW-Authenticate": 'Bearer realm="agentkeel-tools"'} if exc.status == 401 else {}
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": code,
                "message": exc.message,
                "data": {"code": exc.code, "status": exc.status},
            },
        },
        status_code=exc.status,
        headers=headers,
    )
