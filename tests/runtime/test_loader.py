"""load_agent: 'package.module:object' to an agent, with a clear error for each mistake."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from agentkeel.errors import ConfigError
from agentkeel.runtime.loader import load_agent
from agentkeel.runtime.types import Agent

SOURCE = """
from agentkeel.runtime.types import Reply

class EchoAgent:
    async def respond(self, turn):
        return Reply(content=turn.content)

class NeedsArgs:
    def __init__(self, model):
        self.model = model

    async def respond(self, turn):
        return Reply(content="x")

class SyncAgent:
    def respond(self, turn):
        return Reply(content="x")

def make_agent():
    return EchoAgent()

def failing_factory():
    raise RuntimeError("no API key in the environment")

class Holder:
    agent = EchoAgent()

agent = EchoAgent()
not_an_agent = 42
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway module of agents on sys.path; returns its name."""
    name = f"user_agents_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOURCE))
    (tmp_path / f"{name}_broken.py").write_text("import nonexistent_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize("target", ["agent", "EchoAgent", "make_agent", "Holder.agent"])
def test_loads_instances_classes_factories_and_nested_names(module: str, target: str) -> None:
    """An instance is used as is; a class or zero-arg factory is called."""
    loaded = load_agent(f"{module}:{target}")
    assert isinstance(loaded, Agent)
    assert type(loaded).__name__ == "EchoAgent"


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ("no_colon_here", "is not of the form 'package.module:object'"),
        (":agent", "is not of the form"),
        ("{module}:", "is not of the form"),
        ("missing_pkg_abc.module:agent", "no module named 'missing_pkg_abc'"),
        ("{module}_broken:agent", "no module named 'nonexistent_dependency_xyz'"),
        ("{module}:nope", "has no attribute 'nope'"),
        ("{module}:NeedsArgs", "the class needs argument(s) model"),
        ("{module}:failing_factory", "raised RuntimeError: no API key in the environment"),
        ("{module}:SyncAgent", "respond is not async"),
        ("{module}:not_an_agent", "not an agent, a class or a factory"),
    ],
)
def test_every_failure_is_a_config_error_that_says_what_to_fix(
    module: str, entrypoint: str, message: str
) -> None:
    """Each way an entrypoint can be wrong gives a ConfigError naming it and the fix."""
    value = entrypoint.format(module=module)
    with pytest.raises(ConfigError) as info:
        load_agent(value)
    assert message in info.value.message
    assert repr(value) in info.value.message
