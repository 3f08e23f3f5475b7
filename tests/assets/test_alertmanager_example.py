"""``examples/alertmanager.yml``: valid for ``amtool check-config``, routes by severity,
reads its secrets from files, and a real Alertmanager inhibits a warning while the same
alert fires as critical."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentkeel.assets.alert_rules import ALERT_NAMES, alert_rules
from agentkeel.config.alerts import AlertSettings
from agentkeel.testing.ports import free_port_run
from tests.conftest import debian_tool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "alertmanager.yml"


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
    """Every one of the five alerts goes to the pager when critical, to chat when a
    warning (amtool's own route test)."""
    for name in ALERT_NAMES:
        result = amtool_run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={EXAMPLE}",
            f"--verify.receivers={receiver}",
            f"alertname={name}",
            f"severity={severity}",
            "agent=default",
            "version=v2",
        )
        assert result.returncode == 0, f"{name} {severity}: {result.stdout}{result.stderr}"


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


@pytest.mark.slow
def test_a_critical_alert_inhibits_its_warning_of_the_same_version(alertmanager: str) -> None:
    """With AgentErrorRateSpike critical for v2, its warning for v2 is suppressed; the
    warning for v1 (another version) and the critical itself stay active."""
    labels = {"alertname": "AgentErrorRateSpike", "agent": "default"}
    sent = [
        {"labels": {**labels, "version": "v2", "severity": "critical"}},
        {"labels": {**labels, "version": "v2", "severity": "warning"}},
        {"labels": {**labels, "version": "v1", "severity": "warning"}},
    ]
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=sent).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        alerts = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        states = {
            (a["labels"]["version"], a["labels"]["severity"]): a["status"]["state"] for a in alerts
        }
        if len(states) == 3 and "unprocessed" not in states.values():
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    assert states == {
        ("v2", "critical"): "active",
        ("v2", "warning"): "suppressed",
        ("v1", "warning"): "active",
    }
