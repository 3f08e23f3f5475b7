"""Reading YAML files of conversations: evaluation sets and golden suites alike.

A file is found by the name of one bundled with a package
(``local-smoke`` is ``local_smoke.yaml`` in that package) or by its path,
then parsed and validated into a pydantic model. Every problem is a
``ConfigError`` naming the file and the line: the syntax error's position, or
the line of the field that does not fit the format.

>>> suite = load_conversation_file("local-smoke", GoldenSuite,
...                                package="agentkeel.ops.golden", what="Golden suite",
...                                shape="Each case needs a name and turns.")
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agentkeel.errors import ConfigError
from agentkeel.web.auth import yaml_error_position

__all__ = ["bundled_names", "load_conversation_file"]

M = TypeVar("M", bound=BaseModel)


def bundled_names(package: str) -> list[str]:
    """Names of the YAML files that ship in ``package``, ``_`` written as ``-``."""
    folder = resources.files(package)
    return sorted(
        entry.name.removesuffix(".yaml").replace("_", "-")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def load_conversation_file(
    name_or_path: str | Path, model: type[M], *, package: str, what: str, shape: str
) -> M:
    """The bundled file of that name in ``package``, or the file at that path, as ``model``.

    ``what`` starts every message ("Evaluation set"); ``shape`` says in a sentence
    what the format wants, after a validation error.
    """
    text, where = _read(name_or_path, package=package, what=what)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{what} {where} is not valid YAML ({yaml_error_position(exc)}). Fix its syntax."
        ) from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A container whose item failed is reported too ("at least 1 item"); the item is
        # what to fix.
        locs = [tuple(error["loc"]) for error in errors]
        problems = "; ".join(
            _describe(error["loc"], error["msg"], text)
            for error in errors
            if not any(
                len(other) > len(error["loc"]) and other[: len(error["loc"])] == tuple(error["loc"])
                for other in locs
            )
        )
        raise ConfigError(f"{what} {where} does not fit the format ({problems}). {shape}") from exc


def _read(name_or_path: str | Path, *, package: str, what: str) -> tuple[str, str]:
    candidate = Path(name_or_path)
    if isinstance(name_or_path, str) and candidate.suffix == "" and "/" not in name_or_path:
        names = bundled_names(package)
        if name_or_path not in names:
            raise ConfigError(
                f"There is no bundled {what.lower()} named '{name_or_path}'. Use one of "
                f"{', '.join(names)}, or give the path of a YAML file."
            )
        resource = resources.files(package) / f"{name_or_path.replace('-', '_')}.yaml"
        return resource.read_text(encoding="utf-8"), f"'{name_or_path}'"
    try:
        return candidate.read_text(encoding="utf-8"), f"'{candidate}'"
    except OSError as exc:
        raise ConfigError(
            f"{what} file '{candidate}' cannot be read ({exc.strerror or exc}). "
            "Check the path, or name a bundled one: " + ", ".join(bundled_names(package)) + "."
        ) from exc


def _describe(loc: tuple[int | str, ...], message: str, text: str) -> str:
    path = ".".join(str(part) for part in loc) or "(top level)"
    line = _line_of(text, loc)
    return f"{path}: {message}" + (f" (line {line})" if line is not None else "")


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The line of the deepest node of ``loc`` that the file has (a missing key: its parent)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
