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
from agentkeel.ops.evals.files import bundled_names, load_conversation_file
from agentkeel.ops.evals.runner import (
    AgentAnswer,
    AgentServerTarget,
    ConversationTarget,
    EvalReport,
    TargetUnreachable,
    TurnResult,
    run_eval_set,
    serve_in_process,
)

__all__ = [
    "AgentAnswer",
    "AgentServerTarget",
    "ConversationTarget",
    "EvalCase",
    "EvalReport",
    "EvalSet",
    "EvalTurn",
    "TargetUnreachable",
    "TurnResult",
    "bundled_eval_sets",
    "bundled_names",
    "english_problem",
    "load_conversation_file",
    "load_eval_set",
    "names_answer",
    "run_eval_set",
    "serve_in_process",
]
