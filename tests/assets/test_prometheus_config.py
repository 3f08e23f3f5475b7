"""``render_prometheus``: a ``prometheus.yml`` that promtool accepts for every target, with
the jobs, ports, discovery and relabelling each target needs; and the ``file_sd`` file
``keel up`` keeps for its replicas."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agentkeel.assets.prometheus_config import (
    ALERT_RULES_FILE,
    JOBS,
    TARGETS,
    Target,
    render_prometheus,
    replica_targets_path,
    write_replica_targets,
)
from agentkeel.cli.main import app
from agentkeel.cli.output import EXIT_CONFIG
from agentkeel.config.durations import duration_seconds
from agentkeel.config.settings import KeelSettings
from agentkeel.deploy.types import ReplicaInfo
from agentkeel.errors import ConfigError

# Debian builds Prometheus without Kubernetes discovery (its client libraries are not
# packaged); promtool there refuses the one field and nothing else.
NO_KUBERNETES_SD = "field kubernetes_sd_configs not found"


def settings_for(tmp_path: Path, **values: Any) -> KeelSettings:
    return KeelSettings.model_validate({"data_dir": str(tmp_path / "data"), **values})


def rendered(settings: KeelSettings, target: Target, **options: Any) -> dict[str, Any]:
    loaded = yaml.safe_load(render_prometheus(settings, target, **options))
    assert isinstance(loaded, dict)
    return loaded


def jobs_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def static_targets(job: dict[str, Any]) -> list[str]:
    return [target for group in job["static_configs"] for target in group["targets"]]


def promtool_check(promtool: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pods_as_file_sd(config: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``config`` with each ``kubernetes_sd_configs`` replaced by a ``file_sd`` of the same
    job; everything else (the relabelling above all) as rendered."""
    swapped: dict[str, Any] = json.loads(json.dumps(config))
    for job in swapped["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": [str(directory / "pods.json")]}]
    return swapped


@pytest.mark.parametrize("target", TARGETS)
def test_promtool_accepts_every_target(tmp_path: Path, promtool: str, target: Target) -> None:
    """Each target's file passes ``promtool check config`` beside a rule file."""
    out = tmp_path / "prometheus.yml"
    out.write_text(render_prometheus(settings_for(tmp_path), target))
    (tmp_path / ALERT_RULES_FILE).write_text("groups: []\n")
    result = promtool_check(promtool, out)
    if target == "kubernetes" and NO_KUBERNETES_SD in result.stdout + result.stderr:
        swapped = pods_as_file_sd(yaml.safe_load(out.read_text()), tmp_path)
        out.write_text(yaml.safe_dump(swapped))
        result = promtool_check(promtool, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_refuses_the_file_without_its_rule_file(tmp_path: Path, promtool: str) -> None:
    """The rule file is part of the config: without ``agent_alerts.yml`` beside it the check
    fails (so the test above checks the file it names)."""
    out = tmp_path / "prometheus.yml"
    out.write_text(render_prometheus(settings_for(tmp_path), "compose"))
    result = promtool_check(promtool, out)
    assert result.returncode != 0
    assert ALERT_RULES_FILE in result.stdout + result.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_loads_the_rules_and_alerts_alertmanager(
    tmp_path: Path, target: Target
) -> None:
    """The rule file of ``keel render alerts``, Alertmanager on 9093, 15 s intervals."""
    config = rendered(settings_for(tmp_path), target)
    assert config["rule_files"] == [ALERT_RULES_FILE]
    [alertmanager] = config["alerting"]["alertmanagers"]
    [address] = static_targets(alertmanager)
    assert address == ("127.0.0.1:9093" if target == "local" else "alertmanager:9093")
    assert config["global"] == {
        "scrape_interval": "15s",
        "scrape_timeout": "10s",
        "evaluation_interval": "15s",
    }


def test_the_local_target_scrapes_keel_ups_ports(tmp_path: Path) -> None:
    """Router, memory and tool server at the ports of the settings; the replicas from the
    targets file in the data directory, named by its absolute path."""
    settings = settings_for(
        tmp_path,
        router={"port": 9180},
        memory={"port": 9188},
        tools={"server": {"port": 9190, "host": "0.0.0.0"}},
    )
    jobs = jobs_of(rendered(settings, "local"))
    assert set(jobs) == set(JOBS)
    assert static_targets(jobs["router"]) == ["127.0.0.1:9180"]
    assert static_targets(jobs["memory"]) == ["127.0.0.1:9188"]
    assert static_targets(jobs["tools"]) == ["127.0.0.1:9190"]
    [file_sd] = jobs["agent"]["file_sd_configs"]
    assert file_sd["files"] == [str(tmp_path / "data" / "prometheus" / "targets.json")]
    assert Path(file_sd["files"][0]).is_absolute()


def test_the_local_target_leaves_out_what_keel_up_does_not_start(tmp_path: Path) -> None:
    """No router job with ``up.router`` off, no memory job when the agents use a memory
    server of their own, no tools job when ``tools.servers`` lists theirs."""
    settings = settings_for(
        tmp_path,
        up={"router": False},
        memory_client={"url": "http://memory.internal:8788"},
        tools={"servers": [{"name": "weather", "url": "https://weather.example.com/mcp"}]},
    )
    assert set(jobs_of(rendered(settings, "local"))) == {"agent"}


def test_the_compose_target_uses_service_names_and_finds_every_agent_by_dns(
    tmp_path: Path,
) -> None:
    """The compose services at the containers' ports; ``agent`` by DNS A records, so each
    replica of ``--scale agent=N`` is a target."""
    settings = settings_for(tmp_path, server={"port": 8181})
    jobs = jobs_of(rendered(settings, "compose"))
    assert set(jobs) == set(JOBS)
    assert jobs["agent"]["dns_sd_configs"] == [{"names": ["agent"], "type": "A", "port": 8181}]
    assert static_targets(jobs["router"]) == ["router:8080"]
    assert static_targets(jobs["memory"]) == ["memory:8788"]
    assert static_targets(jobs["tools"]) == ["tools:9090"]


def test_the_kubernetes_target_keeps_annotated_pods_and_copies_their_labels(
    tmp_path: Path,
) -> None:
    """Pod discovery; the relabelling keeps ``prometheus.io/scrape: "true"`` pods, takes
    port and path from the annotations and sets exactly namespace, pod, job, component and
    app_version, never ``version``."""
    [job] = rendered(settings_for(tmp_path), "kubernetes")["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    rules = job["relabel_configs"]
    keep = rules[0]
    assert keep["action"] == "keep" and keep["regex"] == "true"
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    written = {rule["target_label"] for rule in rules if "target_label" in rule}
    assert written == {
        "__address__",
        "__metrics_path__",
        "namespace",
        "pod",
        "job",
        "component",
        "app_version",
    }
    copied = {
        rule["source_labels"][0]: rule["target_label"]
        for rule in rules
        if rule.get("target_label") in {"job", "component", "app_version"}
    }
    assert copied == {
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "job",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": "component",
        "__meta_kubernetes_pod_label_app_kubernetes_io_version": "app_version",
    }
    assert not any(rule.get("action") == "labelmap" for rule in rules)


@pytest.mark.parametrize("target", TARGETS)
def test_no_target_sets_a_version_label(tmp_path: Path, target: Target) -> None:
    """A target label ``version`` would rename the metrics' own to ``exported_version``."""
    text = render_prometheus(settings_for(tmp_path), target)
    assert "target_label: version" not in text
    config = yaml.safe_load(text)
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            assert "version" not in group.get("labels", {})


def test_a_short_scrape_interval_shortens_the_timeout(tmp_path: Path) -> None:
    """Prometheus refuses a scrape timeout above the interval: 1 s scrapes time out at 1 s;
    the rules are evaluated as often unless told otherwise."""
    config = rendered(settings_for(tmp_path), "local", scrape_interval="1s")
    assert config["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    slower = rendered(
        settings_for(tmp_path), "local", scrape_interval="1m", evaluation_interval="30s"
    )
    assert slower["global"]["scrape_timeout"] == "10s"
    assert slower["global"]["evaluation_interval"] == "30s"


@pytest.mark.parametrize("interval", ["15", "1x", "", "0s", "s", "1.5s"])
def test_a_bad_interval_is_refused_with_its_value(tmp_path: Path, interval: str) -> None:
    with pytest.raises(ConfigError, match="scrape interval") as raised:
        render_prometheus(settings_for(tmp_path), "local", scrape_interval=interval)
    assert f"'{interval}'" in raised.value.message


@pytest.mark.parametrize("interval", ["5 m", "1h5", "90"])
def test_intervals_are_read_with_the_alert_settings_grammar(tmp_path: Path, interval: str) -> None:
    """An interval and an alert's window are Prometheus durations read by one parser: the
    same text is refused with the same explanation in both places."""
    with pytest.raises(ValueError) as settings_error:
        duration_seconds(interval)
    with pytest.raises(ConfigError) as render_error:
        render_prometheus(settings_for(tmp_path), "local", scrape_interval=interval)
    assert str(settings_error.value) in render_error.value.message


def test_an_unknown_target_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local, compose, kubernetes"):
        render_prometheus(settings_for(tmp_path), "nomad")  # type: ignore[arg-type]


def replica(name: str, version: str, url: str) -> ReplicaInfo:
    return ReplicaInfo(name=name, version=version, url=url, state="ready")


def test_the_targets_file_lists_each_replica_with_its_name_and_version(tmp_path: Path) -> None:
    """One ``file_sd`` group per replica; readable by Prometheus running as another user."""
    path = write_replica_targets(
        tmp_path,
        [
            replica("replica-1", "v1", "http://127.0.0.1:8081"),
            replica("agent-v2-1", "v2", "http://[::1]:8083"),
        ],
    )
    assert path == replica_targets_path(tmp_path) == tmp_path / "prometheus" / "targets.json"
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:8081"], "labels": {"replica": "replica-1", "app_version": "v1"}},
        {"targets": ["[::1]:8083"], "labels": {"replica": "agent-v2-1", "app_version": "v2"}},
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_replica_targets(tmp_path, [])
    assert json.loads(path.read_text()) == []


def test_a_replica_without_a_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replica-1"):
        write_replica_targets(tmp_path, [replica("replica-1", "v1", "http://127.0.0.1")])


def test_keel_render_prometheus_prints_and_writes_the_file(tmp_path: Path) -> None:
    """``--out -`` prints the file; ``--out`` writes it (mode 0644, Prometheus reads it);
    a bad ``--scrape-interval`` is a configuration error that names it."""
    config = tmp_path / "keel.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nrouter:\n  port: 9280\n")
    runner = CliRunner()
    printed = runner.invoke(
        app, ["--config", str(config), "render", "prometheus", "--target", "local", "--out", "-"]
    )
    assert printed.exit_code == 0, printed.output
    assert static_targets(jobs_of(yaml.safe_load(printed.output))["router"]) == ["127.0.0.1:9280"]

    out = tmp_path / "monitoring" / "prometheus.yml"
    written = runner.invoke(
        app,
        ["--config", str(config), "render", "prometheus", "--target", "compose", "--out", str(out)],
    )
    assert written.exit_code == 0, written.output
    assert set(jobs_of(yaml.safe_load(out.read_text()))) == set(JOBS)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644

    refused = runner.invoke(
        app, ["--config", str(config), "render", "prometheus", "--scrape-interval", "soon"]
    )
    assert refused.exit_code == EXIT_CONFIG
    assert "'soon' is not a Prometheus duration" in refused.output
