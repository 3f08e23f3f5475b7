"""Built-in tools every agent can be given by name: ``calculator`` and ``current_time``.

Both are plain functions, so ``LocalToolSet`` derives their schemas from the
signatures like any user tool. ``builtin_toolset(["calculator"])`` is how the
runtime turns ``agent.tools`` from the settings into a ``ToolSet``. Both finish
in microseconds (``current_time`` reads a small zone file the first time a
zone is asked for), so they run on the event loop (``@runs_inline``) rather
than in a worker thread.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentkeel.errors import ConfigError
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.tools.local import LocalToolSet, runs_inline

MAX_EXPRESSION_CHARS = 1_000
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4_096
"""Results larger than this (about 1233 decimal digits) are refused, so one
tool call cannot make the process build a number that eats memory and CPU."""
MAX_AST_NODES = 500

Number = int | float


class CalculatorError(ValueError):
    """An expression the calculator cannot or will not evaluate; the message says why."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}

_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}


def _round(value: Number, digits: int = 0) -> Number:
    if not isinstance(digits, int):
        raise CalculatorError("round(x, digits): digits must be a whole number")
    return round(value, digits) if digits else round(value)


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


@runs_inline
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Supports + - * / // % ** and parentheses, unary minus, the constants pi and e,
    and the functions sqrt, abs, round, min, max, floor, ceil, log, log10, exp,
    sin, cos and tan. Example: "2 * (3 + 4) ** 2 - sqrt(16)".

    Args:
        expression: The arithmetic expression to evaluate, e.g. "17 * 23 + 4".
    """
    text = expression.strip()
    if not text:
        raise CalculatorError("the expression is empty; send something like '2 + 2'")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(
            f"the expression is {len(text)} characters; the limit is {MAX_EXPRESSION_CHARS}"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(
            f"'{text}' is not a valid arithmetic expression ({exc.msg}); "
            "use numbers, + - * / // % ** and parentheses"
        ) from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_AST_NODES:
        raise CalculatorError(f"the expression has more than {MAX_AST_NODES} parts; split it up")
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError as exc:
        raise CalculatorError("division by zero") from exc
    except OverflowError as exc:
        raise CalculatorError("the result is too large to represent") from exc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, CalculatorError):
            raise
        raise CalculatorError(f"cannot evaluate '{text}': {exc}") from exc
    return _format(value)


def _evaluate(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"{node.value!r} is not a number; only numbers are allowed")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left)
        right = _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculatorError(
            f"unknown name '{node.id}'; known constants: {', '.join(sorted(_CONSTANTS))}"
        )
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.BinOp):
        raise CalculatorError("that operator is not supported; use + - * / // % **")
    raise CalculatorError(
        f"'{ast.unparse(node)}' is not arithmetic; use numbers, operators and functions "
        f"({', '.join(sorted(_FUNCTIONS))})"
    )


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise CalculatorError(
            f"unknown function '{name}'; known functions: {', '.join(sorted(_FUNCTIONS))}"
        )
    if node.keywords:
        raise CalculatorError(f"{node.func.id}() takes positional arguments only")
    args = [_evaluate(arg) for arg in node.args]
    name = node.func.id
    if name in ("min", "max") and not args:
        raise CalculatorError(f"{name}() needs at least one number")
    try:
        return _checked(_FUNCTIONS[name](*args))
    except TypeError as exc:
        raise CalculatorError(f"{name}() got the wrong number of arguments ({len(args)})") from exc
    except ValueError as exc:
        raise CalculatorError(f"{name}() is not defined for {_format_args(args)}") from exc


def _check_power(base: Number, exponent: Number) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"the exponent {exponent} is too large; the limit is {MAX_EXPONENT}")
    # Estimate the size of an integer power before computing it: 2 ** 10000 is
    # fine, 10 ** 10000 already is not.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and math.log2(abs(base)) * exponent > MAX_INT_BITS + 1
    ):
        raise CalculatorError(
            f"{base} ** {exponent} is too large; results are limited to about "
            f"{int(MAX_INT_BITS * math.log10(2))} digits"
        )


def _checked(value: Any) -> Number:
    if isinstance(value, complex):
        raise CalculatorError("the result is a complex number; only real results are supported")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(
            f"the result is too large; results are limited to about "
            f"{int(MAX_INT_BITS * math.log10(2))} digits"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    if not isinstance(value, int | float):
        raise CalculatorError(f"unexpected result of type {type(value).__name__}")
    return value


def _format(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".15g")


def _format_args(args: Sequence[Number]) -> str:
    return ", ".join(_format(a) for a in args) or "no arguments"


def make_current_time(*, clock: Clock | None = None) -> Callable[..., str]:
    """Build the ``current_time`` tool on a clock (the system clock by default)."""
    source = clock or SystemClock()

    @runs_inline
    def current_time(timezone: str = "UTC") -> str:
        """Return the current date and time as ISO-8601, in UTC or an IANA time zone.

        Args:
            timezone: An IANA time zone name such as "Europe/Paris" or "America/New_York".
        """
        try:
            zone = ZoneInfo(timezone.strip() or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone '{timezone}'; use an IANA name such as "
                "'UTC', 'Europe/Paris' or 'America/New_York'"
            ) from exc
        return datetime.fromtimestamp(source.time(), tz=zone).isoformat(timespec="seconds")

    return current_time


BUILTIN_NAMES: tuple[str, ...] = ("calculator", "current_time")


def builtin_functions(*, clock: Clock | None = None) -> dict[str, Callable[..., Any]]:
    """Every built-in tool function by name."""
    return {"calculator": calculator, "current_time": make_current_time(clock=clock)}


def builtin_toolset(names: Sequence[str], *, clock: Clock | None = None) -> LocalToolSet:
    """A ``LocalToolSet`` of the named built-in tools.

    >>> tools = builtin_toolset(["calculator", "current_time"])

    Raises ``ConfigError`` for a name that is not a built-in.
    """
    available = builtin_functions(clock=clock)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(
            f"agent.tools lists unknown tool(s) {', '.join(repr(n) for n in unknown)}. "
            f"The built-in tools are: {', '.join(BUILTIN_NAMES)}. Fix agent.tools in keel.yaml "
            "or KEEL_AGENT__TOOLS, or give the agent a custom ToolSet."
        )
    return LocalToolSet([available[name] for name in dict.fromkeys(names)])
