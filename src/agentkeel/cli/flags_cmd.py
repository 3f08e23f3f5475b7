"""``keel flags …``: the feature flags in the flag file (``flags.source: file``).

    keel flags list [--json]
    keel flags show KEY [--user U] [--org O] [--task T] [--json]
    keel flags set KEY VARIANT [--value JSON] [--state enabled|disabled]
    keel flags validate [FILE]

The flag file is ``flags.file``, else ``<data dir>/flags.json``. ``set`` validates the
whole resulting file before writing it, writes it and the replicas' accepted copy
under their lock, and writes one audit record (``flags.changed``, from -> to, actor
``cli:<login>``); replicas apply it on their next turn within
``flags.poll_interval_s``. A key that is not a live setting, a bad resulting file, an
unknown variant exits 1 with every problem listed. While the flag file is refused,
``list`` and ``show`` show the accepted copy the replicas keep serving, with a
warning that says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.auditing import record_audit
from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import (
    EXIT_RUNTIME,
    exits_on_keel_error,
    print_error,
    print_json,
    print_warning,
    stdout_console,
)
from agentkeel.config.flag_accepted import AcceptedFlags, FlagsInForce, flags_in_force
from agentkeel.config.flag_changes import describe_changes
from agentkeel.config.flag_edit import UNSET, FlagEditError, set_flag
from agentkeel.config.flag_file import (
    FlagDefinition,
    FlagDocument,
    FlagFileError,
    flag_key_problem,
    flag_source_path,
    load_flag_file,
)
from agentkeel.config.flag_layer import open_flag_layer
from agentkeel.config.layers import LoadedSettings
from agentkeel.config.live import TurnContext, base_values

flags_app = typer.Typer(
    name="flags",
    help="Feature flags: list, show, set, validate the flag file (flagd format).",
    epilog="Example: keel flags set guardrails.max_steps_per_turn strict --value 4",
    no_args_is_help=True,
)

P = ParamSpec("P")
R = TypeVar("R")


def _exits_1_on_flag_errors(func: Callable[P, R]) -> Callable[P, R]:
    """A refused flag file is the user's to fix: one red line, the problems, exit 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FlagFileError as exc:
            print_error(exc)
            raise typer.Exit(EXIT_RUNTIME) from None

    return exits_on_keel_error(wrapper)


def _file_source(loaded: LoadedSettings, command: str) -> Path:
    """The flag file, or an error when the flags come from elsewhere."""
    source = loaded.settings.flags.source
    if source != "file":
        where = (
            "a flagd service (flags.flagd_host)" if source == "flagd" else "nowhere (flags are off)"
        )
        raise FlagEditError(
            f"flags.source is '{source}': flags come from {where}, so there is no flag file "
            f"for keel flags {command}; set flags.source: file to use one."
        )
    return flag_source_path(loaded.settings)


def _in_force(loaded: LoadedSettings) -> FlagsInForce:
    """The flag file's document, or while it is refused the accepted copy, with a warning."""
    shown = flags_in_force(loaded.settings)
    if shown.warning is not None:
        print_warning(shown.warning)
    return shown


@flags_app.command("list", epilog="Example: keel flags list --json")
@_exits_1_on_flag_errors
def list_flags(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show every flag of the flag file.

    For each: state, default variant, variants, targeting; then whether the replicas'
    accepted copy holds this file. While the file is refused: the accepted copy's flags
    (what replicas serve), with a warning that says why.
    """
    loaded = load_cli_settings(ctx)
    path = _file_source(loaded, "list")
    shown = _in_force(loaded)
    document = shown.document
    accepted = _accepted_info(loaded, path, document)
    if as_json:
        print_json(
            {
                "file": str(path),
                "exists": path.exists(),
                "refused": shown.refused.message if shown.refused is not None else None,
                "flags": {key: flag.summary() for key, flag in document.flags.items()},
                "accepted": accepted,
            }
        )
        return
    out = stdout_console()
    where = "the accepted copy of " if shown.from_copy else ""
    if not document.flags:
        out.print(
            f"No flags in {where}{escape(str(path))}"
            + ("" if path.exists() else " (no such file yet)")
            + ". Add one: keel flags set KEY VARIANT --value JSON"
        )
        return
    table = Table(title=f"flags in {where}{escape(str(path))}", title_justify="left")
    for column in ("flag", "state", "default variant", "variants", "targeting"):
        table.add_column(column, overflow="fold")
    for key, flag in document.flags.items():
        table.add_row(
            escape(key),
            flag.state,
            escape(flag.default_variant or "-"),
            escape(_variants_text(flag)),
            "yes" if flag.targeting is not None else "no",
        )
    out.print(table)
    if accepted is not None:
        state = "holds this file" if accepted["current"] else "holds another version"
        out.print(
            f"accepted copy: {state} (sha256 {accepted['sha256'][:12]}, {accepted['accepted_at']}"
            f" by {escape(accepted['actor'])})"
        )


@flags_app.command(
    "show", epilog="Example: keel flags show agent.model_chain --user ana --org acme"
)
@_exits_1_on_flag_errors
def show(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="A live setting's key, e.g. agent.model_chain.")],
    user: Annotated[str | None, typer.Option("--user", help="Evaluate for this user.")] = None,
    org: Annotated[str | None, typer.Option("--org", help="The user's organization.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="The session's metadata.task.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show a flag, the value it serves for a user and the base value it replaces.

    The base value is the one of the settings below the flags (defaults, keel.yaml,
    environment). Without --user, targeting on the user sees no one. While the flag
    file is refused: the accepted copy's flag (what replicas serve), with a warning.
    """
    loaded = load_cli_settings(ctx)
    settings = loaded.settings
    problem = flag_key_problem(key)
    if problem is not None:
        raise FlagEditError(f"'{key}' is {problem}.")
    document = FlagDocument.empty()
    path: Path | None = None
    refused: str | None = None
    if settings.flags.source == "file":
        path = flag_source_path(settings)
        shown = _in_force(loaded)
        document = shown.document
        refused = shown.refused.message if shown.refused is not None else None
    definition = document.flags.get(key)
    context = TurnContext(
        user_id=user or "",
        organization=org,
        agent_id=settings.agent.id,
        version=settings.agent.version,
        task=task,
    )
    with open_flag_layer(settings, document=document if path is not None else None) as layer:
        outcome = layer.explain(context, key) if layer is not None else None
    base = base_values(settings)[key]
    served = (
        {"value": _jsonable(outcome.value), "variant": outcome.variant, "reason": outcome.reason}
        if outcome is not None and outcome.served
        else None
    )
    payload = {
        "key": key,
        "source": settings.flags.source,
        "file": str(path) if path is not None else None,
        "refused": refused,
        "flag": definition.summary() if definition is not None else None,
        "context": {"user": user, "organization": org, "task": task},
        "served": served,
        "not_served_because": _why_not(outcome) if served is None else None,
        "base": {"value": _jsonable(base), "source": loaded.source_of(key)},
    }
    if as_json:
        print_json(payload)
        return
    _print_show(payload, definition)


@flags_app.command(
    "set",
    epilog="Example: keel flags set agent.model_chain premium   "
    "(or: keel flags set guardrails.max_steps_per_turn strict --value 4)",
)
@_exits_1_on_flag_errors
def set_command(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The flag: a live setting's key.")],
    variant: Annotated[str, typer.Argument(help="The variant to serve by default.")],
    value: Annotated[
        str | None,
        typer.Option(
            "--value",
            help='The variant\'s value as JSON (4, true, ["calculator"]; a bare word is a '
            "string); defines or changes the variant, and creates the flag when it is new.",
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="enabled or disabled (a disabled flag sets nothing)."),
    ] = None,
) -> None:
    """Switch a flag's default variant (--value: define it; --state: enable, disable).

    The whole resulting file is validated first; it is then written, put in force and
    audited. Replicas apply it on their next turn, within flags.poll_interval_s.
    """
    loaded = load_cli_settings(ctx)
    _file_source(loaded, "set")
    wanted_state: Literal["ENABLED", "DISABLED"] | None = None
    if state is not None:
        if state.lower() not in ("enabled", "disabled"):
            raise FlagEditError(f"--state '{state}': use enabled or disabled.")
        wanted_state = "ENABLED" if state.lower() == "enabled" else "DISABLED"
    actor = record_audit(ctx)
    edit = set_flag(
        loaded.settings,
        key,
        variant,
        actor=actor,
        value=_parsed_value(value) if value is not None else UNSET,
        state=wanted_state,
    )
    out = stdout_console()
    if not edit.changes:
        out.print(f"{escape(key)}: already serving variant {escape(variant)}; nothing changed.")
        return
    interval = loaded.settings.flags.poll_interval_s
    if edit.created:
        value_shown = json.dumps(edit.document.flags[key].variants[variant])
        summary = f"{key}: flag created, serving variant {variant} = {value_shown}"
    else:
        summary = describe_changes(edit.changes)
    out.print(f"{escape(summary)} ({escape(str(edit.source))})", soft_wrap=True)
    out.print(
        f"Replicas apply it on their next turn, within {interval:g}s (flags.poll_interval_s).",
        soft_wrap=True,
    )


@flags_app.command("validate", epilog="Example: keel flags validate ./flags.json")
@exits_on_keel_error
def validate(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(help="The flag file to check (default: the configured one)."),
    ] = None,
) -> None:
    """Check a flag file as the replicas will: exit 0 (valid: N flags) or 1 (every problem)."""
    loaded = load_cli_settings(ctx)
    path = file if file is not None else flag_source_path(loaded.settings)
    try:
        document = load_flag_file(path, settings=loaded.settings)
    except FlagFileError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_RUNTIME) from None
    count = len(document.flags)
    stdout_console().print(f"valid: {count} flag{'s' if count != 1 else ''} ({escape(str(path))})")


# -- helpers ----------------------------------------------------------------------


def _parsed_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: the model chain's name, a variant of a string flag


def _accepted_info(
    loaded: LoadedSettings, path: Path, document: FlagDocument
) -> dict[str, Any] | None:
    state = AcceptedFlags(data_dir=loaded.settings.data_dir, source=path.absolute()).read_state()
    if state is None:
        return None
    return {
        "sha256": state.sha256,
        "accepted_at": datetime.fromtimestamp(state.accepted_at, tz=UTC).isoformat(),
        "actor": state.actor,
        "current": state.sha256 == document.sha256,
    }


def _variants_text(flag: FlagDefinition) -> str:
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in flag.variants.items())


def _why_not(outcome: Any) -> str:
    if outcome is None:
        return "no flag sets this key"
    if outcome.label == "disabled":
        return "the flag is disabled"
    if outcome.label == "default":
        return "no variant for this context (no defaultVariant)"
    return f"evaluation failed: {outcome.error}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def _print_show(payload: dict[str, Any], definition: FlagDefinition | None) -> None:
    out = stdout_console()
    key = escape(payload["key"])
    if definition is None:
        where = f" in {escape(payload['file'])}" if payload["file"] else f" ({payload['source']})"
        out.print(f"{key}: no flag{where}")
    else:
        out.print(f"{key}: flag in {escape(payload['file'])}")
        out.print(
            f"  state {definition.state} · default variant "
            f"{escape(definition.default_variant or '-')} · targeting "
            f"{'yes' if definition.targeting is not None else 'no'}"
        )
        out.print(f"  variants: {escape(_variants_text(definition))}", soft_wrap=True)
    context = payload["context"]
    who = f"user {context['user']}" if context["user"] else "no user in particular"
    if context["organization"]:
        who += f" of {context['organization']}"
    if context["task"]:
        who += f", task {context['task']}"
    base = payload["base"]
    base_text = f"{json.dumps(base['value'])} ({base['source']})"
    served = payload["served"]
    if served is not None:
        out.print(
            f"served for {escape(who)}: {escape(json.dumps(served['value']))} "
            f"(variant {escape(served['variant'])}, {served['reason']})",
            soft_wrap=True,
        )
        out.print(f"replaces the base value {escape(base_text)}", soft_wrap=True)
    else:
        out.print(
            f"for {escape(who)}: {escape(payload['not_served_because'])}; the base value "
            f"{escape(base_text)} applies",
            soft_wrap=True,
        )
