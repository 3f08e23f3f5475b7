"""Evaluation sets: conversations with the answers each reply must name.

An evaluation set is a YAML file::

    name: local-smoke
    description: What the default local agent must get right.
    cases:
      - name: capital-follow-up
        turns:
          - user: What is the capital of France?
            expect: [Paris]
          - user: And of Italy?
            expect: [Rome]

Each case is one session; its turns are sent in order, so a follow-up is
answered with the earlier turns as history. A turn passes when its reply names
one of ``expect`` (whole words, any case) and, unless the set says
``english: false``, reads as English (see ``checks``). Sets that ship with
agentkeel are found by name (``load_eval_set("local-smoke")``); any other is
read from its path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentkeel.errors import ConfigError

BUNDLED_PACKAGE = "agentkeel.ops.evals"


class EvalTurn(BaseModel):
    """One user message and the answers that count as right."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field(min_length=1)
    expect: tuple[str, ...] = Field(min_length=1)


class EvalCase(BaseModel):
    """One conversation: its turns go to one session, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    turns: tuple[EvalTurn, ...] = Field(min_length=1)


class EvalSet(BaseModel):
    """A named list of cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    english: bool = Field(default=True, description="Every reply must read as English.")
    cases: tuple[EvalCase, ...] = Field(min_length=1)

    @property
    def turn_count(self) -> int:
        return sum(len(case.turns) for case in self.cases)


def bundled_eval_sets() -> list[str]:
    """Names of the evaluation sets that ship with agentkeel, e.g. ``['local-smoke']``."""
    folder = resources.files(BUNDLED_PACKAGE)
    return sorted(
        entry.name.removesuffix(".yaml").replace("_", "-")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def load_eval_set(name_or_path: str | Path) -> EvalSet:
    """The bundled set of that name (``local-smoke``), or the set in that YAML file.

    Raises ``ConfigError`` naming the set and the field for a missing file, bad
    YAML or a case that does not fit the format.
    """
    text, where = _read(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Evaluation set {where} is not valid YAML: {exc}") from exc
    try:
        return EvalSet.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(
            f"Evaluation set {where} does not fit the format ({problems}). Each case needs a "
            "name and turns, each turn a 'user' message and a non-empty 'expect' list."
        ) from exc


def _read(name_or_path: str | Path) -> tuple[str, str]:
    candidate = Path(name_or_path)
    if isinstance(name_or_path, str) and candidate.suffix == "" and "/" not in name_or_path:
        names = bundled_eval_sets()
        if name_or_path not in names:
            raise ConfigError(
                f"There is no bundled evaluation set named '{name_or_path}'. Use one of "
                f"{', '.join(names)}, or give the path of a YAML file."
            )
        resource = resources.files(BUNDLED_PACKAGE) / f"{name_or_path.replace('-', '_')}.yaml"
        return resource.read_text(encoding="utf-8"), f"'{name_or_path}'"
    try:
        return candidate.read_text(encoding="utf-8"), f"'{candidate}'"
    except OSError as exc:
        raise ConfigError(
            f"Evaluation set file '{candidate}' cannot be read ({exc.strerror or exc}). "
            "Check the path, or name a bundled set: " + ", ".join(bundled_eval_sets()) + "."
        ) from exc
