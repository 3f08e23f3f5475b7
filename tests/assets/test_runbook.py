"""``docs/runbook.md``: a section for every alert at the anchor its ``runbook_url`` names,
with the alert's default settings; the five playbooks with their six steps; and every
``keel`` command it (or an alert's description) shows is a command the CLI has, with
options that command takes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from agentkeel.assets.alert_rules import alert_rules
from agentkeel.cli.main import app
from agentkeel.config.alerts import AlertSettings

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
TEXT = RUNBOOK.read_text(encoding="utf-8")
DEFAULTS = AlertSettings()
SETTINGS_KEYS = {
    "AgentErrorRateSpike": "error_rate",
    "AgentContextWindowExhaustion": "context_exhaustion",
    "AgentMemoryLatencyDegraded": "memory_latency",
    "AgentModelTimeoutRate": "model_timeouts",
    "AgentSessionDurationAbnormal": "session_duration",
}
PLAYBOOKS = (
    "Context poisoning",
    "Tool-call storm",
    "Memory corruption",
    "Model-API degradation",
    "Silent quality drift",
)
STEPS = ("Detect", "Assess", "Contain", "Mitigate", "Verify", "Postmortem")
GLOBAL_OPTIONS = {"--config", "--env", "--data-dir"}


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (hyphens and
    underscores kept), spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every heading outside code blocks."""
    without_code = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return [
        (len(m.group(1)), m.group(2)) for m in re.finditer(r"^(#{1,6}) (.+)$", without_code, re.M)
    ]


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, text in headings(markdown):
        slug = github_slug(text)
        count = seen.get(slug, 0)
        out.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return out


def section(markdown: str, title: str) -> str:
    """The text under the heading ``title``, up to the next heading of its level or
    higher (headings inside code blocks do not count)."""
    lines = markdown.splitlines(keepends=True)
    fenced = False
    level = 0
    body: list[str] = []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"^(#{1,6}) (.+)$", line.rstrip("\n"))
        if level == 0:
            if heading and heading.group(2) == title:
                level = len(heading.group(1))
            continue
        if heading and len(heading.group(1)) <= level:
            break
        body.append(line)
    assert level, f"no heading {title!r}"
    return "".join(body)


def keel_commands(markdown: str) -> Iterator[str]:
    """Every `keel …` command: lines of code blocks, and inline code spans."""
    for body in re.findall(r"^```\w*\n(.*?)^```", markdown, re.M | re.S):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").strip()
            if line.startswith("keel "):
                yield line
    without_code = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    yield from re.findall(r"`(keel [^`]+)`", without_code)


def description_commands() -> Iterator[str]:
    for rule in alert_rules(DEFAULTS):
        yield from re.findall(r"`(keel [^`]+)`", rule.description)


COMMANDS = sorted(set(keel_commands(TEXT)) | set(description_commands()))


def test_every_alert_has_its_section_at_its_anchor() -> None:
    """Each runbook_url's anchor is a heading of the runbook."""
    found = anchors(TEXT)
    for rule in alert_rules(DEFAULTS):
        assert rule.anchor in found, rule.name


def test_every_playbook_url_lands_on_its_playbook() -> None:
    """Each alert's playbook_url anchor is the heading of one of the five playbooks."""
    playbook_anchors = {github_slug(title) for title in PLAYBOOKS}
    assert playbook_anchors <= anchors(TEXT)
    for rule in alert_rules(DEFAULTS):
        anchor = rule.playbook_url.rpartition("#")[2]
        assert anchor in playbook_anchors, (rule.name, anchor)


@pytest.mark.parametrize("name", SETTINGS_KEYS)
def test_each_alert_section_names_the_playbook_its_link_leads_to(name: str) -> None:
    """The alert's section has a **Playbook** line whose first link is the playbook of
    its playbook_url, and the table at the top pairs the alert with the same one."""
    [rule] = [rule for rule in alert_rules(DEFAULTS) if rule.name == name]
    anchor = rule.playbook_url.rpartition("#")[2]
    line = re.search(
        r"^\*\*Playbook\*\* \(`playbook_url`\): \[[^]]+\]\(#([^)]+)\)", section(TEXT, name), re.M
    )
    assert line, f"{name}: no Playbook line"
    assert line.group(1) == anchor, name
    row = re.search(rf"^\| {name} \| \[[^]]+\]\(#([^)]+)\) \|$", TEXT, re.M)
    assert row and row.group(1) == anchor, name


@pytest.mark.parametrize(
    "name",
    ["AgentContextWindowExhaustion", "AgentMemoryLatencyDegraded", "AgentSessionDurationAbnormal"],
)
def test_quantile_alerts_are_read_as_a_tail_above_the_threshold(name: str) -> None:
    """A p95 above the threshold is at least 5 % of the events above it: the section says
    so, and never that 95 % of them are."""
    what_fired = " ".join(section(TEXT, name).split("**Look first**")[0].split())
    share = f"{DEFAULTS.quantile * 100:g}%"
    tail = f"at least {(1 - DEFAULTS.quantile) * 100:.4g}%"
    assert f"p{DEFAULTS.quantile * 100:g}" in what_fired, name
    assert tail in what_fired, name
    assert not re.search(rf"\b{re.escape(share)} of (the|those)\b", what_fired), name


def test_every_link_inside_the_runbook_lands_on_a_heading() -> None:
    """Links to #anchors (from the alert sections to the playbooks) all resolve."""
    found = anchors(TEXT)
    links = re.findall(r"\]\(#([^)]+)\)", TEXT)
    assert links
    assert set(links) <= found, set(links) - found


@pytest.mark.parametrize("name", SETTINGS_KEYS)
def test_each_alert_section_shows_its_defaults_and_a_playbook(name: str) -> None:
    """The YAML block of the alert's section is exactly the default settings of that
    alert, and the section points at a playbook."""
    body = section(TEXT, name)
    blocks = re.findall(r"^```yaml\n(.*?)^```", body, re.M | re.S)
    assert blocks, f"{name}: no yaml block with its settings"
    shown: dict[str, Any] = yaml.safe_load(blocks[0])
    key = SETTINGS_KEYS[name]
    parsed = AlertSettings.model_validate(shown["alerts"])
    assert set(shown["alerts"][key]) >= {"for_duration", "min_rps", "severity"}
    assert getattr(parsed, key) == getattr(DEFAULTS, key), (
        f"{name}: the runbook's values are not the defaults"
    )
    playbook_links = {github_slug(p) for p in PLAYBOOKS}
    assert set(re.findall(r"\]\(#([^)]+)\)", body)) & playbook_links, f"{name}: no playbook"


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_each_playbook_has_the_six_steps_in_order_with_commands(playbook: str) -> None:
    """Detect, assess, contain, mitigate, verify, postmortem, each with a keel command
    or what to do by hand."""
    body = section(TEXT, playbook)
    positions = []
    for step in STEPS:
        match = re.search(rf"^\*\*\d\. {step}\.\*\*", body, re.M)
        assert match, f"{playbook}: no step {step}"
        positions.append(match.start())
    assert positions == sorted(positions), f"{playbook}: steps out of order"
    for start, end in zip(positions, [*positions[1:], len(body)], strict=True):
        step_text = body[start:end]
        assert "keel " in step_text or "by hand" in step_text, step_text[:80]


def test_the_commands_are_found() -> None:
    """The extraction sees the runbook's commands (a runbook with none would pass the
    command check below)."""
    assert len(COMMANDS) > 30
    assert any(command.startswith("keel flags set") for command in COMMANDS)


def _command_path(words: list[str]) -> tuple[list[str], Any]:
    """The subcommand names of ``words`` and the click command they lead to."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    index = 0
    while index < len(words) and words[index] in GLOBAL_OPTIONS:
        index += 2
    for word in words[index:]:
        commands = getattr(command, "commands", None)
        if commands is None or word not in commands:
            break
        command = commands[word]
        path.append(word)
    return path, command


@pytest.mark.parametrize("line", COMMANDS)
def test_every_keel_command_exists_with_its_options(line: str) -> None:
    """`keel <path> --help` exits 0, the path ends at a command (not a group), and each
    option the line uses is one that command takes."""
    words = shlex.split(line, comments=True)[1:]
    path, command = _command_path(words)
    assert path, f"{line}: no such command"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"{line}: {result.output}"
    assert not hasattr(command, "commands"), f"{line}: {' '.join(path)} is a group"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = {word.split("=", 1)[0] for word in words[len(path) :] if word.startswith("-")}
    assert used <= options | {"--help"}, f"{line}: unknown options {used - options}"
