"""Golden checks: short conversations whose replies must have given properties.

A suite (``suite``) is YAML: cases of turns, each with what its reply must be
(names some words, matches a pattern, called a tool, no error or a given
one); ``checks`` decides one turn; ``run_golden`` (``runner``) runs a suite
against one agent server directly and reports per case. ``local-smoke`` ships
with agentkeel. ``keel golden run`` is the command; blue/green, canary and
``keel rollback`` call ``run_golden`` themselves.

>>> report = await run_golden("http://127.0.0.1:8081", load_golden_suite("local-smoke"))
>>> report.passed
True
"""

from agentkeel.ops.golden.checks import turn_problems
from agentkeel.ops.golden.runner import (
    GoldenCaseResult,
    GoldenChecks,
    GoldenReport,
    GoldenTarget,
    GoldenTurnResult,
    run_golden,
    run_golden_suite,
)
from agentkeel.ops.golden.suite import (
    GoldenCase,
    GoldenExpect,
    GoldenSuite,
    GoldenTurn,
    bundled_golden_suites,
    load_golden_suite,
)

__all__ = [
    "GoldenCase",
    "GoldenCaseResult",
    "GoldenChecks",
    "GoldenExpect",
    "GoldenReport",
    "GoldenSuite",
    "GoldenTarget",
    "GoldenTurn",
    "GoldenTurnResult",
    "bundled_golden_suites",
    "load_golden_suite",
    "run_golden",
    "run_golden_suite",
    "turn_problems",
]
