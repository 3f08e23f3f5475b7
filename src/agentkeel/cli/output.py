"""How ``keel`` talks to the terminal: Rich consoles, one-line errors, exit codes.

Expected failures (``KeelError``) print one red line on stderr and exit with
``EXIT_CONFIG`` (2) for bad settings or secrets, ``EXIT_RUNTIME`` (1) for
anything else; tracebacks are for bugs only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from agentkeel.errors import ConfigError, KeelError, SecretError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

P = ParamSpec("P")
R = TypeVar("R")


def stdout_console() -> Console:
    """The console for results (tables, replies); built per command, never at import."""
    return Console(highlight=False)


def stderr_console() -> Console:
    """The console for errors and progress, so stdout stays clean for ``--json``."""
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (the ``--json`` output of every command)."""
    stdout_console().print_json(json.dumps(data, ensure_ascii=False))


def format_bytes(count: float) -> str:
    """A size as people read it: ``512 B``, ``1.5 KiB``, ``64.0 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def exit_code_for(exc: KeelError) -> int:
    """2 for configuration and secrets (fix a file, then retry), 1 for runtime failures."""
    return EXIT_CONFIG if isinstance(exc, ConfigError | SecretError) else EXIT_RUNTIME


def print_error(exc: KeelError, *, console: Console | None = None) -> None:
    """Print ``keel: <message>`` in red on stderr (extra lines of the message stay plain)."""
    out = console or stderr_console()
    first, _, rest = exc.message.partition("\n")
    # soft_wrap: the terminal wraps; the text stays one line for grep and log files.
    out.print(f"[bold red]keel:[/] [red]{escape(first)}[/]", soft_wrap=True)
    if rest:
        out.print(escape(rest), soft_wrap=True)


def print_warning(message: str, *, console: Console | None = None) -> None:
    """Print ``keel: warning: <message>`` in yellow on stderr (extra lines plain), for a
    command that goes on with something other than what was asked."""
    out = console or stderr_console()
    first, _, rest = message.partition("\n")
    out.print(f"[bold yellow]keel: warning:[/] [yellow]{escape(first)}[/]", soft_wrap=True)
    if rest:
        out.print(escape(rest), soft_wrap=True)


def exits_on_keel_error(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so a ``KeelError`` becomes a red line and the right exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except KeelError as exc:
            print_error(exc)
            raise typer.Exit(exit_code_for(exc)) from None

    return wrapper
