"""The README's Python examples, taken from README.md itself, work as written."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from agentkeel.testing import AgentHarness, Say

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block(containing: str) -> str:
    """The one ```python block of README.md that contains ``containing``."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    matching: list[str] = [block for block in blocks if containing in block]
    assert len(matching) == 1, f"expected one README python block with {containing!r}"
    return str(matching[0])


def run_block(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, f"{README.name} example", "exec"), namespace)
    return namespace


async def test_readme_harness_example_passes() -> None:
    """The README's agent test (scripted tool call, then a reply) passes as written."""
    namespace = run_block(python_block("from agentkeel.testing import"))
    tests = [
        value
        for name, value in namespace.items()
        if name.startswith("test_") and inspect.iscoroutinefunction(value)
    ]
    assert tests, "the README's harness example defines no async test_ function"
    for test in tests:
        await test()


async def test_readme_agent_example_answers_through_the_model() -> None:
    """The README's ShortAnswerAgent answers with what the model says."""
    namespace = run_block(python_block("class ShortAnswerAgent"))
    async with AgentHarness(agent=namespace["agent"], script=[Say("Paris.")]) as harness:
        outcome = await harness.say("What is the capital of France?")
    assert outcome.reply == "Paris."
