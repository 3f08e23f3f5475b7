"""The ``tools`` settings section: the tool server and the guarded tools client.

``tools.server`` configures ``keel serve tools`` (port 9090); ``tools.servers``
lists the MCP servers an agent uses, and the other fields are the guards every
call to them passes through.

    tools:
      server:
        tokens_file: .keel/tools_tokens.yaml   # who may call which tools
      servers:
        - name: tools
          url: http://127.0.0.1:9090/mcp
          token_file: .keel/tools_agent_token  # sent as Authorization: Bearer
          audience: agentkeel-tools            # sign a caller assertion per call
        - name: weather
          url: https://weather.example.com/mcp
          prefix: weather_
      call_timeout_s: 10
      calls_per_minute: 30
      session_call_budget: 200
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{0,32}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpGetSettings(_Section):
    """The ``http_get`` tool of the tool server. Off unless ``enabled`` and hosts are listed."""

    enabled: bool = False
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the tool may fetch, e.g. ['api.example.com']; '*.example.com' "
        "allows subdomains.",
    )
    allow_private: bool = Field(
        default=False,
        description="Allow private, loopback and link-local addresses (off: they are refused "
        "after DNS resolution).",
    )
    max_bytes: int = Field(default=256 * 1024, ge=1, description="Bytes of body read at most.")
    timeout_s: float = Field(default=10.0, gt=0)
    max_redirects: int = Field(default=3, ge=0)


class ToolServerSettings(_Section):
    """``keel serve tools``: the MCP tool server."""

    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    tools_modules: list[str] = Field(
        default_factory=list,
        description="package.module names whose public functions are served as tools.",
    )
    builtins: list[str] = Field(
        default_factory=lambda: ["calculator", "current_time", "http_get"],
        description="Built-in tools to serve (memory_search and memory_store join when a "
        "memory server is configured).",
    )
    memory_url: str | None = Field(
        default=None, description="The memory server, e.g. http://127.0.0.1:8788; unset = none."
    )
    tool_timeout_s: float = Field(default=30.0, gt=0, description="Per call, on the server side.")
    http_get: HttpGetSettings = Field(default_factory=HttpGetSettings)
    tokens_file: Path | None = Field(
        default=None,
        description="YAML/JSON mapping token -> {name, tools: [...]}; every /mcp request needs "
        "one of these tokens. Unset = secrets_dir/<tokens_secret>.",
    )
    tokens_secret: str = "tools_tokens"
    audience: str = Field(
        default="agentkeel-tools",
        min_length=1,
        description="The aud claim a caller assertion must carry to be accepted here.",
    )


class McpServerSettings(_Section):
    """One MCP server (ours or anyone's) reached over streamable HTTP."""

    name: str = Field(description="Label in metrics, logs and breaker names, e.g. 'tools'.")
    url: str = Field(description="The streamable HTTP endpoint, e.g. http://127.0.0.1:9090/mcp.")
    prefix: str = Field(
        default="",
        description="Prepended to this server's tool names (e.g. 'weather_') to avoid clashes.",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Per call; unset = tools.call_timeout_s."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0)
    token_file: Path | None = Field(
        default=None, description="File holding the bearer token sent to this server."
    )
    token_secret: str | None = Field(
        default=None, description="Name of the bearer token's file inside secrets_dir."
    )
    audience: str | None = Field(
        default=None,
        description="Sign a caller assertion for this audience on every call (e.g. "
        "'agentkeel-tools' for keel serve tools); unset = send no caller identity.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"'{value}' is not a valid server name; use letters, digits, _ or -")
        return value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError(
                f"prefix '{value}' is not valid; use up to 32 letters, digits, _ or - "
                "(model APIs accept only those in tool names)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url '{value}' must start with http:// or https://")
        return value


class ToolBreakerSettings(_Section):
    """The circuit breaker per MCP server and tool."""

    failure_threshold: int = Field(default=3, ge=1)
    failure_window_s: float = Field(default=60.0, gt=0)
    latency_threshold_s: float = Field(default=10.0, gt=0)
    latency_window: int = Field(default=20, ge=1)
    min_latency_samples: int = Field(default=5, ge=1)
    open_s: float = Field(default=30.0, gt=0, description="How long it stays open before a probe.")


class ToolsSettings(_Section):
    """Tools over MCP: the tool server and the guards on every agent tool call."""

    server: ToolServerSettings = Field(default_factory=ToolServerSettings)
    servers: list[McpServerSettings] = Field(default_factory=list)
    call_timeout_s: float = Field(default=10.0, gt=0)
    max_result_chars: int = Field(
        default=16_000, ge=100, description="Longer results are cut and marked as truncated."
    )
    calls_per_minute: int = Field(
        default=30, ge=0, description="Per session and tool; 0 = no limit. Redis when configured."
    )
    session_call_budget: Annotated[int, Field(ge=0)] = Field(
        default=200, description="Tool calls per session in total; 0 = no limit."
    )
    discovery_ttl_s: float = Field(
        default=300.0, gt=0, description="How long a server's tool list is cached."
    )
    breaker: ToolBreakerSettings = Field(default_factory=ToolBreakerSettings)

    @model_validator(mode="after")
    def _check_servers(self) -> ToolsSettings:
        names = [server.name for server in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"tools.servers: names must be unique, got {names}")
        return self
