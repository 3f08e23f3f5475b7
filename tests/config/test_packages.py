"""The settings classes stay a foundation: no config module imports a service package."""

from __future__ import annotations

import ast
from pathlib import Path

import agentkeel.config
from agentkeel.config import tools as tool_settings
from agentkeel.config.settings import KeelSettings

SERVICES = ("tools", "memory", "runtime", "router", "deploy", "ops", "cli", "models")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_config_modules_import_no_service_package() -> None:
    """Every module of agentkeel.config imports only foundations, never a service."""
    package = Path(agentkeel.config.__file__).parent
    offending = {
        f"{path.name}: {module}"
        for path in package.glob("*.py")
        for module in _imports(path)
        if module.split(".")[:2] in (["agentkeel", service] for service in SERVICES)
    }
    assert offending == set()


def test_every_section_is_a_config_class() -> None:
    """The tools and identity sections are classes of agentkeel.config."""
    settings = KeelSettings()
    assert isinstance(settings.tools, tool_settings.ToolsSettings)
    assert type(settings.identity).__module__ == "agentkeel.config.identity"
