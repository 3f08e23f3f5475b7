"""``keel render …``: the monitoring assets for the engines users already run.

    keel render prometheus [--target local|compose|kubernetes] [--out prometheus.yml]
    keel render alerts [--out agent_alerts.yml]
    keel render grafana [--out agent_dashboard.json]
    keel render logging [--dir .]

Each is rendered from the settings (``keel.yaml`` and its layers), so ports,
thresholds and retention match the stack they watch. ``--out -`` prints instead.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from agentkeel.assets.alert_rules import render_alerts
from agentkeel.assets.dashboard import render_dashboard
from agentkeel.assets.log_pipeline import render_logging
from agentkeel.assets.prometheus_config import DEFAULT_INTERVAL, render_prometheus
from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_warning, stdout_console
from agentkeel.config.alerts import DEFAULT_RUNBOOK_URL
from agentkeel.storage.atomic import atomic_write

render_app = typer.Typer(
    name="render",
    help="Write monitoring assets (Prometheus, alerts, Grafana, the log pipeline) from the "
    "settings.",
    epilog="Example: keel render prometheus --target kubernetes --out prometheus.yml",
    no_args_is_help=True,
)


class TargetChoice(StrEnum):
    """Where the Prometheus that reads the file runs."""

    local = "local"
    compose = "compose"
    kubernetes = "kubernetes"


def _out_option(default: str) -> object:
    return typer.Option("--out", "-o", help=f"File to write ('-' prints it). Default {default}.")


def _write(text: str, out: Path) -> None:
    if str(out) == "-":
        typer.echo(text, nl=not text.endswith("\n"))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    # Read by other users' programs (Prometheus, Grafana, Loki), and holds no secret.
    atomic_write(out, text.encode(), durable=False, mode=0o644)
    stdout_console().print(f"wrote {out}")


@render_app.command(
    "prometheus", epilog="Example: keel render prometheus --target compose --out prometheus.yml"
)
@exits_on_keel_error
def prometheus(
    ctx: typer.Context,
    target: Annotated[
        TargetChoice,
        typer.Option("--target", help="local: keel up's ports; compose; kubernetes: pod SD."),
    ] = TargetChoice.local,
    out: Annotated[Path, _out_option("prometheus.yml")] = Path("prometheus.yml"),
    scrape_interval: Annotated[
        str,
        typer.Option(
            "--scrape-interval",
            help="How often Prometheus scrapes and evaluates the rules (a Prometheus "
            "duration: 15s, 1m).",
        ),
    ] = DEFAULT_INTERVAL,
) -> None:
    """Write prometheus.yml: scrape jobs for router, replicas, memory and tools, plus rules."""
    settings = load_cli_settings(ctx).settings
    _write(render_prometheus(settings, target.value, scrape_interval=scrape_interval), out)


@render_app.command("alerts", epilog="Example: keel render alerts --out agent_alerts.yml")
@exits_on_keel_error
def alerts(
    ctx: typer.Context,
    out: Annotated[Path, _out_option("agent_alerts.yml")] = Path("agent_alerts.yml"),
) -> None:
    """Write agent_alerts.yml: the five alerts, thresholds from the alerts: settings."""
    settings = load_cli_settings(ctx).settings
    _write(render_alerts(settings.alerts), out)
    if settings.alerts.runbook_url == DEFAULT_RUNBOOK_URL:
        # The default renders, but it is nobody's runbook: every alert link would miss.
        print_warning(
            f"alerts.runbook_url is left at its placeholder ({DEFAULT_RUNBOOK_URL}); the "
            "alerts' runbook and playbook links point there. Set it to where your copy of "
            "docs/runbook.md is served (alerts: {runbook_url: https://...} in keel.yaml, or "
            "KEEL_ALERTS__RUNBOOK_URL)."
        )


@render_app.command("grafana", epilog="Example: keel render grafana --out agent_dashboard.json")
@exits_on_keel_error
def grafana(
    ctx: typer.Context,
    out: Annotated[Path, _out_option("agent_dashboard.json")] = Path("agent_dashboard.json"),
) -> None:
    """Write the Grafana dashboard JSON: four rows and a version variable."""
    settings = load_cli_settings(ctx).settings
    _write(render_dashboard(settings), out)


@render_app.command("logging", epilog="Example: keel render logging --dir deploy/logging")
@exits_on_keel_error
def logging_pipeline(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory to write the files into.")
    ] = Path("."),
) -> None:
    """Write the Fluent Bit pipeline (JSON files -> Kafka -> Loki) and Loki's retention limits."""
    settings = load_cli_settings(ctx).settings
    for name, text in render_logging(settings).items():
        _write(text, directory / name)
