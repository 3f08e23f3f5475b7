"""``keel config show`` and how every command loads its settings.

Settings come from the layers in ``agentkeel.config`` (defaults < ``keel.yaml``
< ``KEEL_*`` environment) plus the command's own flags on top (layer
``flags``). ``config show`` prints each effective value and the layer that set
it. Secrets are never settings values, only the files that hold them, so the
table shows paths; passwords inside URLs are masked as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.output import exits_on_keel_error, stdout_console
from agentkeel.config.layers import LoadedSettings, flatten, load_settings
from agentkeel.secrets.redact import redact_url


@dataclass(frozen=True, slots=True)
class CliState:
    """The global options (``keel --config ... --data-dir ... <command>``)."""

    config_path: Path | None = None
    data_dir: Path | None = None


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
    """Load settings for a command: its own ``--config``/``--data-dir`` win over the global ones."""
    state = cli_state(ctx)
    flags: dict[str, Any] = dict(overrides or {})
    chosen_dir = data_dir or state.data_dir
    if chosen_dir is not None:
        flags["data_dir"] = str(chosen_dir)
    return load_settings(config_path=config_path or state.config_path, overrides=flags or None)


def settings_rows(loaded: LoadedSettings) -> list[tuple[str, str, str]]:
    """(key, shown value, source layer) for every setting, lists of sections expanded."""
    rows: list[tuple[str, str, str]] = []
    for key, value in flatten(loaded.settings).items():
        source = loaded.source_of(key)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                for field, inner in item.items():
                    rows.append((f"{key}[{index}].{field}", _shown(inner), source))
        else:
            rows.append((key, _shown(value), source))
    return rows


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return redact_url(value)
    return redact_url(json.dumps(value))


_SOURCE_STYLES = {"default": "dim", "file": "cyan", "env": "magenta", "flags": "yellow"}


@exits_on_keel_error
def show(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON {key: {value, source}} instead of a table.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="keel.yaml to read; wins over the global keel --config and KEEL_CONFIG.",
        ),
    ] = None,
) -> None:
    """Print every effective setting and the layer it came from (default, file, env, flags).

    Secret values are never shown: settings only name the files that hold them.
    """
    loaded = load_cli_settings(ctx, config_path=config)
    rows = settings_rows(loaded)
    console = stdout_console()
    if as_json:
        payload = {key: {"value": value, "source": source} for key, value, source in rows}
        console.print_json(json.dumps(payload))
        return
    table = Table(title="keel settings", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", no_wrap=True)
    for key, value, source in rows:
        style = _SOURCE_STYLES.get(source, "")
        table.add_row(key, escape(value), f"[{style}]{source}[/]" if style else source)
    console.print(table)
