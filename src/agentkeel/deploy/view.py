"""What ``keel rollout`` shows: the live Rich view of a release and its JSON form.

The view is built from the ``Release`` alone (the controller keeps weights,
the last verdict, sessions per version and recent events in its ``detail``),
so ``keel rollout status`` in another terminal shows what the controller sees.

>>> console.print(release_view(release, settings=settings.rollout, controller_alive=True))
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentkeel.config.rollout import RolloutSettings
from agentkeel.deploy.state import Controller, Release

__all__ = ["release_json", "release_view", "step_label"]

_STATE_STYLES = {
    "running": "cyan",
    "paused": "yellow",
    "promoted": "green",
    "aborted": "yellow",
    "rolled_back": "red",
    "failed": "red",
}
_VERDICT_STYLES = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
EVENTS_SHOWN = 6


def step_label(release: Release, settings: RolloutSettings) -> str:
    """ "step 2/4 (25 %, 12m 30s of 2h)" and the like, per strategy."""
    elapsed = _duration(release.elapsed_s)
    if release.strategy == "canary":
        steps = settings.canary.steps
        total = len(steps) + 1
        if release.phase == "traffic" and release.step < len(steps):
            step = steps[release.step]
            held = ", held" if release.detail.get("held") else ""
            return (
                f"step {release.step + 1}/{total} ({step.weight} %, {elapsed} of "
                f"{_duration(step.duration_s)}{held})"
            )
        if release.phase == "retiring":
            return f"step {total}/{total} (100 %, previous version draining for {elapsed})"
        return f"{release.phase} ({elapsed})"
    if release.strategy == "bluegreen":
        if release.phase == "switched":
            window = _duration(settings.bluegreen.switch_back_window_s)
            return f"switched {elapsed} ago (switch-back window {window})"
        return f"{release.phase} ({elapsed})"
    old = release.detail.get("old") or []
    batch = settings.rolling.batch
    total = max(1, -(-len(old) // batch))
    if release.phase == "replace":
        return f"replacing batch {release.step + 1}/{total}"
    if release.phase == "retiring":
        return f"every replica replaced; previous version draining for {elapsed}"
    return f"{release.phase} ({elapsed})"


def release_view(
    release: Release,
    *,
    settings: RolloutSettings,
    controller_alive: bool | None = None,
) -> RenderableType:
    """The release as a block of Rich tables: step, weights, sessions, verdict, events."""
    detail = release.detail
    style = _STATE_STYLES.get(release.state, "white")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row(
        "release",
        f"{escape(release.release)}  [dim]{escape(release.previous)} → "
        f"{escape(release.version)}, {release.strategy}"
        + (f", time scale {release.time_scale:g}" if release.time_scale != 1 else "")
        + "[/]",
    )
    head.add_row("state", f"[{style}]{release.state}[/]  {escape(step_label(release, settings))}")
    if controller_alive is not None:
        head.add_row(
            "controller",
            "[green]alive[/]"
            if controller_alive
            else "[yellow]none[/] [dim](keel rollout resume continues it)[/]"
            if release.active
            else "[dim]none[/]",
        )
    if release.snapshot_id:
        head.add_row("snapshot", escape(release.snapshot_id))
    if release.reason:
        head.add_row("reason", escape(release.reason))
    if detail.get("recommendation"):
        head.add_row("next", f"[yellow]{escape(str(detail['recommendation']))}[/]")
    if detail.get("switch_back_s") is not None:
        head.add_row("switch-back", f"{float(detail['switch_back_s']) * 1000:.1f} ms")
    if detail.get("last_error") and release.active:
        head.add_row("last error", f"[red]{escape(str(detail['last_error']))}[/]")
    parts: list[RenderableType] = [head, _versions_table(release)]
    verdict = detail.get("verdict")
    if isinstance(verdict, dict) and verdict.get("metrics") is not None:
        parts.append(_verdict_table(verdict, analyses=int(detail.get("analyses") or 0)))
    events = detail.get("events") or []
    if events:
        lines = Text()
        for event in events[-EVENTS_SHOWN:]:
            lines.append(f"{_clock(event.get('at'))}  ", style="dim")
            lines.append(f"{event.get('event', '')}\n")
        parts.append(lines)
    return Group(*parts)


def _versions_table(release: Release) -> Table:
    weights = release.detail.get("weights") or {}
    sessions = release.detail.get("sessions") or {}
    stable = release.detail.get("stable")
    table = Table(title="versions", title_justify="left", expand=False)
    table.add_column("version")
    table.add_column("weight", justify="right")
    table.add_column("live sessions", justify="right")
    for version in dict.fromkeys([release.previous, release.version, *weights, *sessions]):
        mark = " [dim](stable)[/]" if version == stable else ""
        weight = weights.get(version)
        table.add_row(
            f"{escape(version)}{mark}",
            "-" if weight is None else str(weight),
            str(sessions.get(version, "-")),
        )
    return table


def _verdict_table(verdict: dict[str, Any], *, analyses: int) -> Table:
    outcome = str(verdict.get("outcome"))
    style = _VERDICT_STYLES.get(outcome, "white")
    table = Table(
        title=f"judge: [{style}]{escape(outcome)}[/] after {analyses} analyses",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("verdict")
    table.add_column("stable", justify="right")
    table.add_column("canary", justify="right")
    table.add_column("detail", overflow="fold")
    for metric in verdict.get("metrics") or []:
        name = metric.get("name", "?")
        result = str(metric.get("outcome", ""))
        table.add_row(
            escape(str(name)),
            f"[{_VERDICT_STYLES.get(result, 'white')}]{escape(result)}[/]",
            _number(_first(metric, "stable", "stable_value", "baseline")),
            _number(_first(metric, "canary", "canary_value")),
            escape(str(metric.get("detail", ""))),
        )
    return table


def release_json(
    release: Release,
    *,
    controller: Controller | None,
    now: float,
    heartbeat_timeout_s: float,
) -> dict[str, Any]:
    """The release and whether a controller drives it (``--json``)."""
    data = release.to_json()
    data["controller"] = (
        None
        if controller is None
        else {
            "owner": controller.owner,
            "pid": controller.pid,
            "alive": controller.alive(now, timeout_s=heartbeat_timeout_s),
            "heartbeat_age_s": round(now - controller.heartbeat_at, 3),
        }
    )
    return data


def _first(metric: dict[str, Any], *keys: str) -> Any:
    return next((metric[key] for key in keys if key in metric), None)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else escape(str(value))


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"


def _clock(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "--:--:--"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%H:%M:%S")
