"""Evaluation sets and their scorer: does an agent answer simple conversations right?

A set is a YAML list of conversations with the answers each reply must name
(``cases``); ``run_eval_set`` sends it to an agent server and scores every
reply (``runner``); the checks are in ``checks``. ``local-smoke`` ships with
agentkeel: what the default local agent must get right in a first conversation.

>>> async with serve_in_process(settings) as target:
...     report = await run_eval_set(load_eval_set("local-smoke"), target)
>>> print(report.summary())
"""

from agentkeel.ops.evals.cases import (
    EvalCase,
    EvalSet,
    EvalTurn,
    bundled_eval_sets,
    load_eval_set,
)
from agentkeel.ops.evals.checks import english_problem, names_answer
from agentkeel.ops.evals.runner import (
    AgentServerTarget,
    ConversationTarget,
    EvalReport,
    TurnResult,
    run_eval_set,
    serve_in_process,
)

__all__ = [
    "AgentServerTarget",
    "ConversationTarget",
    "EvalCase",
    "EvalReport",
    "EvalSet",
    "EvalTurn",
    "TurnResult",
    "bundled_eval_sets",
    "english_problem",
    "load_eval_set",
    "names_answer",
    "run_eval_set",
    "serve_in_process",
]
