"""``keel config show`` and how every command loads its settings.

Settings come from the fixed layers in ``agentkeel.config`` (defaults <
``keel.yaml`` < the environment's overlay ``keel.NAME.yaml`` (``keel --env
NAME`` or ``KEEL_ENV``) < ``KEEL_*`` variables) plus the command's own options
on top (layer ``cli``). ``config show`` prints each effective value and the
layer that set it; with ``--user`` (``--org``, ``--task``) the live settings are
resolved for that user through the feature flags and the overrides file, as a
turn of theirs would be. While the flag file or the overrides file is refused,
the last good flags or overrides (what replicas keep serving) are used instead,
with a warning that says why. Secrets are never settings values, only the files
that hold them, so the table shows paths; passwords inside URLs are masked as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic_core import to_jsonable_python
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.output import exits_on_keel_error, print_warning, stdout_console
from agentkeel.config.layers import LoadedSettings, flatten, load_settings
from agentkeel.config.live import LiveLayer, LiveSettings, TurnSettings
from agentkeel.config.live_view import settings_for_user, shown_source
from agentkeel.config.overrides import overrides_in_force
from agentkeel.secrets.redact import redact_url

LIVE_SOURCES = frozenset({"flag", "org", "user"})
"""The layers a turn adds above the fixed ones."""


@dataclass(frozen=True, slots=True)
class CliState:
    """The global options (``keel --config ... --env ... --data-dir ... <command>``)."""

    config_path: Path | None = None
    data_dir: Path | None = None
    environment: str | None = None


def cli_state(ctx: typer.Context) -> CliState:
    """The global options of this invocation (defaults when none were given)."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, CliState) else CliState()


def load_cli_settings(
    ctx: typer.Context,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Load settings for a command: its own ``--config``/``--data-dir`` win over the global
    ones; the global ``--env`` (else ``KEEL_ENV``) picks the environment's overlay."""
    state = cli_state(ctx)
    flags: dict[str, Any] = dict(overrides or {})
    chosen_dir = data_dir or state.data_dir
    if chosen_dir is not None:
        flags["data_dir"] = str(chosen_dir)
    return load_settings(
        config_path=config_path or state.config_path,
        environment=state.environment,
        overrides=flags or None,
    )


@dataclass(frozen=True, slots=True)
class SettingRow:
    """One line of ``config show``: a leaf setting, its value and where it came from."""

    key: str
    value: Any
    """The value as JSON data (secrets are never values, only their files)."""
    source: str
    """The layer: default, file, overlay, env, cli, flag, org or user."""
    detail: str | None = None
    """The layer's detail: the overlay's file, the flag's variant, the override's entry."""

    @property
    def shown(self) -> str:
        """The value as printed: ``-`` for none, passwords in URLs masked."""
        return _shown(self.value)

    @property
    def layer(self) -> str:
        """The layer as printed: ``overlay (keel.production.yaml)``, ``user override
        (acme/bob)``."""
        return shown_source(self.source, self.detail)

    def to_json(self) -> dict[str, Any]:
        """``{value, source}`` with ``detail`` where there is one; the value as shown."""
        body: dict[str, Any] = {"value": self.shown, "source": self.source}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


def settings_rows(loaded: LoadedSettings, turn: TurnSettings | None = None) -> list[SettingRow]:
    """Every setting of ``loaded``, lists of sections expanded; with ``turn``, the live keys
    a flag or an override set are shown with that value and layer instead."""
    flat = flatten(loaded.settings)
    replaced: dict[str, dict[str, Any]] = {}
    if turn is not None:
        for key, source in turn.sources.items():
            if source in LIVE_SOURCES:
                replaced[key] = _flatten_value(key, to_jsonable_python(turn.values[key]))
    rows: list[SettingRow] = []
    emitted: set[str] = set()
    for key, value in flat.items():
        live_key = next((k for k in replaced if key == k or key.startswith(f"{k}.")), None)
        if live_key is not None:
            if live_key not in emitted:
                emitted.add(live_key)
                rows += _live_rows(live_key, replaced[live_key], turn)
            continue
        rows += _rows(key, value, loaded.source_of(key), loaded.detail_of(key))
    for live_key, values in replaced.items():
        if live_key not in emitted:
            rows += _live_rows(live_key, values, turn)
    return rows


@contextmanager
def open_live_settings(loaded: LoadedSettings) -> Iterator[LiveSettings]:
    """The live settings a replica with ``loaded`` would resolve turns with: its feature
    flags (``open_flag_layer``: the flag file read once; none with ``flags.source: none``),
    then its overrides file (read once). A refused flag or overrides file is replaced by
    the last good one replicas keep serving, with a warning on stderr that says why."""
    # Imported here: OpenFeature and flagd are heavy, and most commands never need them.
    from agentkeel.config.flag_accepted import flags_in_force
    from agentkeel.config.flag_layer import open_flag_layer

    settings = loaded.settings
    with ExitStack() as stack:
        layers: list[LiveLayer] = []
        document = None
        if settings.flags.source == "file":
            shown = flags_in_force(settings)
            if shown.warning is not None:
                print_warning(shown.warning)
            document = shown.document
        flags = stack.enter_context(open_flag_layer(settings, document=document))
        if flags is not None:
            layers.append(flags)
        overrides = overrides_in_force(settings)
        if overrides.warning is not None:
            print_warning(overrides.warning)
        layers.append(overrides.overrides)
        yield LiveSettings(settings, layers=layers, source_of=loaded.source_of)


_SOURCE_STYLES = {
    "default": "dim",
    "file": "cyan",
    "overlay": "blue",
    "env": "magenta",
    "cli": "yellow",
    "flag": "green",
    "org": "bright_green",
    "user": "bold green",
}


@exits_on_keel_error
def show(
    ctx: typer.Context,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON {key: {value, source, detail?}} instead of a table."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="keel.yaml to read; wins over the global keel --config and KEEL_CONFIG.",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="Resolve the live settings for this user's turns: feature flags, then "
            "organization and user overrides. The user id as sessions carry it; with a "
            "'/' and no --org it is still one user id, outside any organization.",
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option("--org", help="With --user: the user's organization."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="With --user: the session's task (metadata.task)."),
    ] = None,
) -> None:
    """Print every effective setting and the layer it came from (default, file, overlay,
    env, cli; with --user also flag, org override, user override).

    Secret values are never shown: settings only name the files that hold them.
    """
    if user is None and (org is not None or task is not None):
        raise typer.BadParameter(
            "--org and --task describe a user's turn: add --user (e.g. --user bob --org acme).",
            param_hint="--org/--task",
        )
    loaded = load_cli_settings(ctx, config_path=config)
    turn = None
    organization, slash, name = (user or "").partition("/")
    if org is None and slash and organization and name:
        print_warning(
            f"--user {user} without --org is the user id '{user}' outside any organization. "
            f"An overrides entry '{user}' is the user '{name}' of the organization "
            f"'{organization}'; for that user, give --user {name} --org {organization}."
        )
    if user is not None:
        with open_live_settings(loaded) as live:
            turn = settings_for_user(live, user=user, organization=org, task=task)
    rows = settings_rows(loaded, turn)
    console = stdout_console()
    if as_json:
        console.print_json(json.dumps({row.key: row.to_json() for row in rows}))
        return
    title = "keel settings"
    if user is not None:
        title += f" for {user}" + (f" of {org}" if org else "") + (f", task {task}" if task else "")
    if loaded.environment is not None:
        title += f" (environment {loaded.environment})"
    table = Table(title=escape(title), title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", no_wrap=True)
    for row in rows:
        table.add_row(row.key, escape(row.shown), styled_layer(row))
    console.print(table)


def styled_layer(row: SettingRow) -> str:
    """The row's layer with its colour, as Rich markup."""
    style = _SOURCE_STYLES.get(row.source, "")
    text = escape(row.layer)
    return f"[{style}]{text}[/]" if style else text


def _rows(key: str, value: Any, source: str, detail: str | None) -> list[SettingRow]:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [
            SettingRow(f"{key}[{index}].{field}", inner, source, detail)
            for index, item in enumerate(value)
            for field, inner in item.items()
        ]
    return [SettingRow(key, value, source, detail)]


def _live_rows(key: str, values: Mapping[str, Any], turn: TurnSettings | None) -> list[SettingRow]:
    assert turn is not None
    source, detail = turn.sources[key], turn.detail.get(key)
    return [row for leaf, value in values.items() for row in _rows(leaf, value, source, detail)]


def _flatten_value(prefix: str, value: Any) -> dict[str, Any]:
    """Dotted leaves of one live value, as ``flatten`` spells them (lists stay whole)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten_value(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return redact_url(value)
    return redact_url(json.dumps(value))
