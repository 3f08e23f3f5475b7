from __future__ import annotations

import json
import subprocess
import sys

import pytest

import agentkeel.tools
from agentkeel.config import tools as tool_settings
from agentkeel.tools import client, local, mcp_source, serve, server

HEAVY_MODULES = (
    "mcp",
    "httpx2",
    "starlette",
    "uvicorn",
    "agentkeel.tools.client",
    "agentkeel.tools.mcp_source",
    "agentkeel.tools.server",
    "agentkeel.tools.local",
)


def test_every_export_resolves_and_is_public() -> None:
    """Every name in agentkeel.tools.__all__ is importable, the lazy ones on first use,
    and no private name is exported."""
    for name in agentkeel.tools.__all__:
        assert getattr(agentkeel.tools, name) is not None, name
        assert not name.startswith("_"), name
    assert sorted(agentkeel.tools.__all__) == agentkeel.tools.__all__


def test_exports_are_the_implementation_objects() -> None:
    """The package re-exports the implementations, with the server's factory under a
    name that says which server it builds."""
    assert agentkeel.tools.create_tool_server_app is server.create_app
    assert agentkeel.tools.run_tool_server is serve.run_tool_server
    assert agentkeel.tools.GuardedToolsClient is client.GuardedToolsClient
    assert agentkeel.tools.build_tools_client is client.build_tools_client
    assert agentkeel.tools.McpToolSource is mcp_source.McpToolSource
    assert agentkeel.tools.LocalToolSet is local.LocalToolSet
    assert agentkeel.tools.ToolsSettings is tool_settings.ToolsSettings


def test_exported_tool_sources_satisfy_the_protocol() -> None:
    """The tool sources users combine are ToolSets."""
    tools = agentkeel.tools
    builtins = tools.builtin_toolset(["calculator"])
    mcp = tools.McpToolSource(name="tools", url="http://127.0.0.1:9/mcp")
    composite = tools.CompositeToolSet([("local", builtins), ("tools", mcp)])
    for source in (builtins, mcp, composite):
        assert isinstance(source, tools.ToolSet)


def test_unknown_name_raises_attribute_error() -> None:
    """A name the package does not export fails like a missing attribute, naming it."""
    with pytest.raises(AttributeError, match="no_such_tool"):
        _ = agentkeel.tools.no_such_tool


def test_import_stays_light() -> None:
    """Importing the package loads the ToolSet contract only: not the MCP SDK, the HTTP
    clients, the server stack or the tool implementations."""
    code = (
        "import json, sys; import agentkeel.tools; "
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
