"""The package's declared runtime dependencies are the ones its code uses."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared_dependencies() -> list[str]:
    """Distribution names from ``[project] dependencies``, extras and versions dropped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [re.split(r"[\[<>=!~;\s]", spec, maxsplit=1)[0] for spec in project["dependencies"]]


def imported_top_level_modules() -> set[str]:
    """Every absolute import's top-level module in ``src/agentkeel``."""
    modules: set[str] = set()
    for path in (ROOT / "src" / "agentkeel").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    """Each distribution in ``[project] dependencies`` provides a module that src/ imports,
    so an unused dependency (one nobody imports) cannot linger in every install."""
    modules_of: dict[str, set[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules_of.setdefault(normalise(distribution), set()).add(module)
    imported = imported_top_level_modules()
    unused = []
    for name in declared_dependencies():
        provided = modules_of.get(normalise(name))
        assert provided, f"{name} is declared but not installed; pip install -e '.[dev]'"
        if not provided & imported:
            unused.append(f"{name} (provides {sorted(provided)})")
    assert not unused, f"declared in pyproject.toml but never imported by src/: {unused}"
