"""``keel config diff A B``: the settings two environments differ in.

A side is an environment name (the base ``keel.yaml`` of ``keel --config`` or
``KEEL_CONFIG``, then its overlay ``keel.NAME.yaml`` beside it) or the path of
a YAML file (read on its own over the defaults). The shell's ``KEEL_*``
variables are left out: they would apply to both sides alike and hide what the
files change. Secrets show as ``config show`` shows them (files, masked URL
passwords); values are compared before masking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from agentkeel.cli.config_cmd import SettingRow, cli_state, settings_rows, styled_layer
from agentkeel.cli.output import exits_on_keel_error, stdout_console
from agentkeel.config.layers import (
    Layer,
    LoadedSettings,
    YamlLayer,
    base_config_path,
    load_settings,
    overlay_layer,
)
from agentkeel.errors import ConfigError

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Difference:
    """One key whose effective value differs; ``None`` on a side that lacks the key."""

    key: str
    a: SettingRow | None
    b: SettingRow | None

    def to_json(self) -> dict[str, Any]:
        return {"a": _side_json(self.a), "b": _side_json(self.b)}


def load_side(name: str, *, base: Path | None) -> LoadedSettings:
    """The settings of one side: a YAML file's, or environment ``name``'s over ``base``."""
    if _is_path(name):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(
                f"'{name}' is not a file. Give an environment name (its overlay "
                f"keel.NAME.yaml is read over the base keel.yaml) or the path of a YAML file."
            )
        return load_settings(layers=[YamlLayer(path)])
    layers: list[Layer] = [YamlLayer(base)] if base is not None else []
    layers.append(overlay_layer(name, base=base))
    return load_settings(layers=layers)


def differences(a: LoadedSettings, b: LoadedSettings) -> list[Difference]:
    """Every key whose value differs between ``a`` and ``b``, in ``a``'s order then ``b``'s."""
    rows_a = {row.key: row for row in settings_rows(a)}
    rows_b = {row.key: row for row in settings_rows(b)}
    keys = list(rows_a) + [key for key in rows_b if key not in rows_a]
    found = []
    for key in keys:
        left, right = rows_a.get(key), rows_b.get(key)
        if left is None or right is None or left.value != right.value:
            found.append(Difference(key, left, right))
    return found


@exits_on_keel_error
def diff(
    ctx: typer.Context,
    a: Annotated[
        str, typer.Argument(metavar="A", help="An environment name (e.g. staging) or a YAML file.")
    ],
    b: Annotated[str, typer.Argument(metavar="B", help="The other environment name or YAML file.")],
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Print JSON {"a", "b", "differences": {key: {a, b}}}.'),
    ] = False,
    exit_code: Annotated[
        bool,
        typer.Option(
            "--exit-code", help="Exit 1 when the two differ, 0 when not (as git diff does with it)."
        ),
    ] = False,
) -> None:
    """Print every setting whose effective value differs between A and B, with the layer
    that set it on each side. An environment name reads the base keel.yaml (keel --config
    or KEEL_CONFIG) and its overlay keel.NAME.yaml beside it; a path reads that file
    alone. KEEL_* variables are left out: they apply to both sides alike."""
    base = base_config_path(cli_state(ctx).config_path)
    found = differences(load_side(a, base=base), load_side(b, base=base))
    console = stdout_console()
    if as_json:
        payload = {"a": a, "b": b, "differences": {d.key: d.to_json() for d in found}}
        console.print_json(json.dumps(payload))
    elif not found:
        console.print(f"no differences between {escape(a)} and {escape(b)}")
    else:
        table = Table(
            title=escape(f"keel config diff {a} {b}: {len(found)} setting(s) differ"),
            title_justify="left",
        )
        table.add_column("key", overflow="fold")
        for side in (a, b):
            table.add_column(escape(side), overflow="fold", min_width=12)
            table.add_column("layer", overflow="fold", min_width=8)
        for d in found:
            table.add_row(escape(d.key), *_side_cells(d.a), *_side_cells(d.b))
        console.print(table)
    if exit_code and found:
        raise typer.Exit(1)


def _is_path(name: str) -> bool:
    return "/" in name or name.endswith(_YAML_SUFFIXES) or Path(name).is_file()


def _side_cells(row: SettingRow | None) -> tuple[str, str]:
    if row is None:
        return "[dim](not set)[/]", ""
    return escape(row.shown), styled_layer(row)


def _side_json(row: SettingRow | None) -> dict[str, Any]:
    if row is None:
        return {"value": None, "source": None}
    return row.to_json()
