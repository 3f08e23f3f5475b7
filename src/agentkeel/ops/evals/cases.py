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

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentkeel.ops.evals.files import bundled_names, load_conversation_file

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
    return bundled_names(BUNDLED_PACKAGE)


def load_eval_set(name_or_path: str | Path) -> EvalSet:
    """The bundled set of that name (``local-smoke``), or the set in that YAML file.

    Raises ``ConfigError`` naming the set, the field and its line for a missing
    file, bad YAML or a case that does not fit the format.
    """
    return load_conversation_file(
        name_or_path,
        EvalSet,
        package=BUNDLED_PACKAGE,
        what="Evaluation set",
        shape="Each case needs a name and turns, each turn a 'user' message and a non-empty "
        "'expect' list.",
    )
