"""``examples/alertmanager.yml``: valid for ``amtool check-config``, routes by severity,
reads its secrets from files, and a real Alertmanager, fed the labels the rendered
alerts carry, keeps apart what is about different things and holds back an agent
version's warnings while its error rate pages."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentkeel.assets.alert_rules import (
    CONTEXT_EXHAUSTION,
    ERROR_RATE,
    AlertRule,
    alert_rules,
)
from agentkeel.config.alerts import AlertSettings
from agentkeel.testing.ports import free_port_run
from tests.conftest import debian_tool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "alertmanager.yml"
RULES = alert_rules(AlertSettings())
SERIES = {
    "agent": "default",
    "version": "v2",
    "provider": "openai",
    "job": "memory",
    "instance": "10.0.0.5:8090",
}
"""Values of the grouping labels a firing alert takes from its series."""


def fired(rule: AlertRule, **series: str) -> dict[str, str]:
    """The labels of a firing alert of ``rule`` as Prometheus sends it: the alert's name,
    its severity and extra labels, and its grouping labels (``rule.by``) only."""
    values = {**SERIES, **series}
    return {
        "alertname": rule.name,
        "severity": rule.severity,
        **rule.labels,
        **{label: values[label] for label in rule.by},
    }


def rule_named(name: str) -> AlertRule:
    return next(rule for rule in RULES if rule.name == name)


def amtool_run(amtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_check_config_accepts_the_example(amtool: str) -> None:
    """amtool finds the route, the inhibit rule and both receivers valid."""
    result = amtool_run(amtool, "check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "2 receivers" in result.stdout


@pytest.mark.parametrize(
    ("severity", "receiver"), [("critical", "pager"), ("warning", "team-chat")]
)
def test_each_alert_routes_by_its_severity(amtool: str, severity: str, receiver: str) -> None:
    """Every one of the five alerts, with the labels it carries, goes to the pager when
    critical, to chat when a warning (amtool's own route test)."""
    for rule in RULES:
        labels = {**fired(rule), "severity": severity}
        result = amtool_run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={EXAMPLE}",
            f"--verify.receivers={receiver}",
            *(f"{name}={value}" for name, value in labels.items()),
        )
        assert result.returncode == 0, f"{rule.name} {severity}: {result.stdout}{result.stderr}"


def test_the_default_severities_each_have_a_route() -> None:
    """The severities the rendered alerts carry are the ones the example routes."""
    routes = yaml.safe_load(EXAMPLE.read_text())["route"]["routes"]
    routed = {matcher for route in routes for matcher in route["matchers"]}
    for rule in alert_rules(AlertSettings()):
        assert f'severity="{rule.severity}"' in routed


def test_receivers_take_their_secrets_from_files() -> None:
    """No key, webhook URL or password is a value in the example: each is a *_file."""
    config = yaml.safe_load(EXAMPLE.read_text())
    secrets = {"routing_key", "service_key", "api_url", "smtp_auth_password", "auth_password"}

    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    found = set(keys(config))
    assert not found & secrets, found & secrets
    assert {"routing_key_file", "api_url_file", "smtp_auth_password_file"} <= found


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port with the example configuration."""
    binary = debian_tool("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port_run(1)
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={EXAMPLE}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"alertmanager did not start:\n{(tmp_path / 'alertmanager.log').read_text()}"
                )
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def post(alertmanager: str, alerts: list[dict[str, str]]) -> None:
    sent = [{"labels": labels} for labels in alerts]
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=sent).status_code == 200


def states(alertmanager: str, count: int) -> dict[tuple[tuple[str, str], ...], str]:
    """Each alert's labels -> its state, once Alertmanager has processed all ``count``."""
    deadline = time.monotonic() + 10
    while True:
        alerts = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        found = {
            tuple(sorted(alert["labels"].items())): alert["status"]["state"] for alert in alerts
        }
        if len(found) == count and "unprocessed" not in found.values():
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


@pytest.mark.slow
def test_an_error_rate_page_holds_back_its_agent_versions_warnings(alertmanager: str) -> None:
    """With the five alerts firing as the rules render them, nothing is held back until
    AgentErrorRateSpike fires: then the warning of the same agent and version
    (AgentContextWindowExhaustion) is suppressed, while another version's warning and
    the alerts about a provider, a memory server or session length stay active."""
    firing = [fired(rule) for rule in RULES if rule.name != ERROR_RATE]
    other_version = fired(rule_named(CONTEXT_EXHAUSTION), version="v1")
    post(alertmanager, [*firing, other_version])
    before = states(alertmanager, len(firing) + 1)
    assert set(before.values()) == {"active"}, before

    page = fired(rule_named(ERROR_RATE))
    assert page["severity"] == "critical"
    post(alertmanager, [page])
    after = states(alertmanager, len(firing) + 2)
    suppressed = {labels for labels, state in after.items() if state == "suppressed"}
    assert suppressed == {key(fired(rule_named(CONTEXT_EXHAUSTION)))}, after
    assert after[key(page)] == after[key(other_version)] == "active"


@pytest.mark.slow
def test_alerts_about_different_things_are_notified_apart(alertmanager: str) -> None:
    """Two firings of an alert that differ in one grouping label (another agent, version,
    provider, job or memory server) land in two notification groups, so each group's
    common summary and links are its alert's."""
    sent: list[dict[str, str]] = []
    for rule in RULES:
        sent.append(fired(rule))
        for label in rule.by:
            sent.append(fired(rule, **{label: f"other-{SERIES[label]}"}))
    post(alertmanager, sent)
    deadline = time.monotonic() + 10
    while True:
        groups = httpx.get(f"{alertmanager}/api/v2/alerts/groups").json()
        if sum(len(group["alerts"]) for group in groups) == len(sent):
            break
        assert time.monotonic() < deadline, groups
        time.sleep(0.1)
    shared = [
        [alert["labels"] for alert in group["alerts"]]
        for group in groups
        if len(group["alerts"]) > 1
    ]
    assert not shared, shared
    assert len(groups) == len(sent)
