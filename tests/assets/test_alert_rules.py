"""``keel render alerts``: the rule file passes ``promtool check rules``, and every case of
``alert_cases.py`` passes ``promtool test rules`` against it, for the default settings
and for changed ones (the cases follow the settings)."""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agentkeel.assets.alert_rules import (
    ALERT_NAMES,
    CONTEXT_EXHAUSTION,
    MEMORY_LATENCY,
    PLAYBOOKS,
    SESSION_DURATION,
    alert_queries,
    alert_rules,
    render_alerts,
)
from agentkeel.cli.main import app
from agentkeel.config.alerts import DEFAULT_RUNBOOK_URL, AlertSettings
from tests.assets.alert_cases import AlertCase, all_cases

DEFAULTS = AlertSettings()
CHANGED = AlertSettings.model_validate(
    {
        "window": "10m",
        "quantile": 0.9,
        "labels": {"team": "agents"},
        "error_rate": {
            "threshold": 0.2,
            "for_duration": "5m",
            "min_rps": 0.5,
            "ignored_statuses": ["draining", "quota_exhausted"],
        },
        "context_exhaustion": {"threshold": 0.75, "window": "15m"},
        "memory_latency": {"threshold_s": 0.1, "for_duration": "1m"},
        "model_timeouts": {"threshold": 0.25, "min_rps": 1},
        "session_duration": {"threshold_s": 1800, "window": "2h", "for_duration": "30m"},
    }
)
VARIANTS = {"defaults": DEFAULTS, "changed": CHANGED}
CASES_OF = {variant: all_cases(settings) for variant, settings in VARIANTS.items()}
CASES = [
    pytest.param(VARIANTS[variant], case, id=f"{variant}: {case.id}")
    for variant, cases in CASES_OF.items()
    for case in cases
]


def write_rules(settings: AlertSettings, directory: Path) -> Path:
    path = directory / "agent_alerts.yml"
    path.write_text(render_alerts(settings), encoding="utf-8")
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


NO_IGNORED = AlertSettings.model_validate({"error_rate": {"ignored_statuses": []}})


@pytest.mark.parametrize(
    "settings", [*VARIANTS.values(), NO_IGNORED], ids=[*VARIANTS.keys(), "no ignored statuses"]
)
def test_promtool_check_rules_accepts_the_rendered_file(
    settings: AlertSettings, promtool: str, tmp_path: Path
) -> None:
    """The rendered file is a valid Prometheus rule file with the five alerts."""
    result = run_promtool(promtool, "check", "rules", str(write_rules(settings, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


@pytest.mark.parametrize(("settings", "case"), CASES)
def test_promtool_unit_case(
    settings: AlertSettings, case: AlertCase, promtool: str, tmp_path: Path
) -> None:
    """The alert fires with exactly the expected labels, value and annotations (or stays
    silent), and its signal reads 0 where the case says so."""
    rules = write_rules(settings, tmp_path)
    tests = tmp_path / "test.yml"
    tests.write_text(yaml.safe_dump(promtool_test(settings, case, rules), sort_keys=False))
    result = run_promtool(promtool, "test", "rules", str(tests))
    assert result.returncode == 0, f"{tests}\n{result.stdout}{result.stderr}"


def promtool_test(settings: AlertSettings, case: AlertCase, rules: Path) -> dict[str, Any]:
    """A promtool unit-test file for ``case``: its series, and what must fire when."""
    by_name = {rule.name: rule for rule in alert_rules(settings)}
    rule = by_name[case.alert]
    assert all(set(fired.labels) == set(rule.by) for fired in case.fired), rule.by
    eval_time = f"{case.eval_s}s"
    expected = [
        {
            "exp_labels": {"severity": rule.severity, **rule.labels, **fired.labels},
            "exp_annotations": {
                "summary": expand(rule.summary, fired.labels, fired.value),
                "description": expand(rule.description, fired.labels, fired.value),
                "runbook_url": rule.runbook_url,
                "playbook_url": rule.playbook_url,
            },
        }
        for fired in case.fired
    ]
    alert_tests = [{"eval_time": eval_time, "alertname": case.alert, "exp_alerts": expected}]
    alert_tests += [
        {"eval_time": eval_time, "alertname": other, "exp_alerts": []}
        for other in case.silent_alerts
    ]
    test: dict[str, Any] = {
        "name": case.id,
        "interval": f"{case.interval_s}s",
        "input_series": [
            {"series": key, "values": " ".join("_" if v is None else repr(v) for v in values)}
            for key, values in case.series.items()
        ],
        "alert_rule_test": alert_tests,
    }
    if case.signal_zero:
        test["promql_expr_test"] = [
            {
                "expr": rule.signal,
                "eval_time": eval_time,
                "exp_samples": [
                    {"labels": _labels_text(labels), "value": 0} for labels in case.signal_zero
                ],
            }
        ]
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": f"{case.interval_s}s",
        "tests": [test],
    }


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def expand(template: str, labels: Mapping[str, str], value: float) -> str:
    """An annotation as Prometheus expands it for one alert: its labels, and its value
    through the two humanize functions the annotations use."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    text = text.replace("{{ $value | humanizePercentage }}", humanize_percentage(value))
    text = text.replace("{{ $value | humanizeDuration }}", humanize_duration(value))
    assert "{{" not in text, f"a template this test cannot expand: {text}"
    return text


def humanize_percentage(value: float) -> str:
    """Prometheus' ``humanizePercentage``: ``%.4g%%`` of the value times 100."""
    return f"{value * 100:.4g}%"


def humanize_duration(value: float) -> str:
    """Prometheus' ``humanizeDuration`` for the values these cases reach (0 and up)."""
    if value >= 1:
        whole = int(value)
        days, hours = whole // 86400, whole // 3600 % 24
        minutes, seconds = whole // 60 % 60, whole % 60
        if days:
            return f"{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{minutes}m {seconds}s"
        return f"{value:.4g}s"
    if value == 0:
        return "0s"
    prefix = ""
    for unit in ("m", "u", "n", "p"):
        if abs(value) >= 1:
            break
        prefix, value = unit, value * 1000
    return f"{value:.4g}{prefix}s"


def test_humanize_helpers_agree_with_prometheus_examples() -> None:
    """The helpers give the texts Prometheus' template tests document."""
    assert humanize_duration(0.5) == "500ms"
    assert humanize_duration(1.2345) == "1.234s"
    assert humanize_duration(3600) == "1h 0m 0s"
    assert humanize_duration(20160) == "5h 36m 0s"
    assert humanize_duration(90061) == "1d 1h 1m 1s"
    assert humanize_percentage(0.1) == "10%"
    assert humanize_percentage(0.9916666) == "99.17%"


def test_each_alert_has_a_fire_a_silent_a_zero_and_an_edge_case() -> None:
    """Every alert has at least one case where it fires, one where a bad-looking but
    quiet or lone series stays silent, and one where its signal reads 0."""
    cases = CASES_OF["defaults"]
    for name in ALERT_NAMES:
        own = [case for case in cases if case.alert == name]
        assert any(case.fired for case in own), name
        assert any(not case.fired and "quiet" in case.name for case in own), name
        assert any(case.signal_zero for case in own), name
        assert len([case for case in own if not case.fired]) >= 3, name


def test_the_rule_file_carries_the_settings() -> None:
    """Thresholds, for, severities, windows and extra labels come from the settings."""
    document = yaml.safe_load(render_alerts(CHANGED))
    [group] = document["groups"]
    rules = {rule["alert"]: rule for rule in group["rules"]}
    assert list(rules) == list(ALERT_NAMES)
    error = rules["AgentErrorRateSpike"]
    assert ") > 0.2\n" in error["expr"]
    assert "[10m]" in error["expr"]
    assert "> 0.5" in error["expr"].splitlines()[-1]
    assert error["for"] == "5m"
    assert error["labels"] == {"severity": "critical", "team": "agents"}
    assert "[15m]" in rules["AgentContextWindowExhaustion"]["expr"]
    assert "histogram_quantile(0.9," in rules["AgentMemoryLatencyDegraded"]["expr"]
    assert "[2h]" in rules["AgentSessionDurationAbnormal"]["expr"]
    assert rules["AgentSessionDurationAbnormal"]["for"] == "30m"
    for rule in rules.values():
        assert set(rule["annotations"]) == {
            "summary",
            "description",
            "runbook_url",
            "playbook_url",
        }


def test_caller_statuses_are_not_errors_and_ok_is_not_either() -> None:
    """The error-rate alert's failed turns exclude ok and every ignored status; its
    turns served exclude the ignored ones only."""
    [rule] = [r for r in alert_rules(DEFAULTS) if r.name == "AgentErrorRateSpike"]
    matchers = re.findall(r'agent_turns_total\{status!~"([^"]+)"\}', rule.signal)
    failed, served = matchers[0].split("|"), matchers[1].split("|")
    assert failed == ["ok", *served]
    assert served == DEFAULTS.error_rate.ignored_statuses


def test_every_caller_fault_error_class_is_ignored() -> None:
    """Each KeelError whose HTTP status is 4xx is, by its code, a status the error-rate
    alert ignores (a new one added to errors.py without this list would count)."""
    import agentkeel.errors as errors

    codes = {
        value.code
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, errors.KeelError)
        and 400 <= value.status < 500
    }
    assert codes <= set(DEFAULTS.error_rate.ignored_statuses), codes - set(
        DEFAULTS.error_rate.ignored_statuses
    )


def test_runbook_urls_point_at_each_alerts_section() -> None:
    """runbook_url is alerts.runbook_url plus the anchor of the alert's heading."""
    settings = AlertSettings(runbook_url="https://wiki.example.com/agents/runbook")
    for rule in alert_rules(settings):
        assert rule.runbook_url == f"https://wiki.example.com/agents/runbook#{rule.anchor}"


def test_playbook_urls_point_at_each_alerts_playbook() -> None:
    """playbook_url is alerts.runbook_url plus the anchor of the alert's playbook, another
    place of the runbook than its own section (tests/assets/test_runbook.py checks that
    each anchor is a playbook's heading)."""
    settings = AlertSettings(runbook_url="https://wiki.example.com/agents/runbook")
    for rule in alert_rules(settings):
        base, _, anchor = rule.playbook_url.partition("#")
        assert base == "https://wiki.example.com/agents/runbook"
        assert anchor == PLAYBOOKS[rule.name] != rule.anchor


HISTOGRAM_ALERTS = (CONTEXT_EXHAUSTION, MEMORY_LATENCY, SESSION_DURATION)


@pytest.mark.parametrize("settings", VARIANTS.values(), ids=VARIANTS.keys())
def test_quantile_alerts_say_what_a_quantile_above_the_threshold_means(
    settings: AlertSettings,
) -> None:
    """A p95 above X means at least 5 % of the events exceed X (10 % for a p90): the
    histogram alerts' texts say so, name the percentile, and never claim that 95 % of
    the events are above it."""
    tail = f"at least {(1 - settings.quantile) * 100:.4g}% of"
    share = f"{settings.quantile * 100:.4g}% of"
    percentile = f"p{settings.quantile * 100:.4g}"
    for rule in alert_rules(settings):
        if rule.name not in HISTOGRAM_ALERTS:
            continue
        assert tail in rule.description, rule.description
        assert percentile in rule.summary and percentile in rule.description, rule.name
        assert share not in rule.summary and share not in rule.description, rule.name


def test_keel_render_alerts_warns_while_the_runbook_url_is_the_placeholder(
    tmp_path: Path,
) -> None:
    """Left at its default, alerts.runbook_url renders, and keel render alerts says on
    stderr (not in the file or on stdout) to set it; set, no warning."""
    out = tmp_path / "agent_alerts.yml"
    config = tmp_path / "keel.yaml"
    config.write_text("alerts:\n  window: 5m\n")
    default = CliRunner().invoke(
        app, ["--config", str(config), "render", "alerts", "--out", str(out)]
    )
    assert default.exit_code == 0, default.output
    assert "alerts.runbook_url" in default.stderr and DEFAULT_RUNBOOK_URL in default.stderr
    assert "warning" not in default.stdout
    assert f"{DEFAULT_RUNBOOK_URL}#agenterrorratespike" in out.read_text()

    config.write_text("alerts:\n  runbook_url: https://wiki.example.com/runbook\n")
    printed = CliRunner().invoke(app, ["--config", str(config), "render", "alerts", "--out", "-"])
    assert printed.exit_code == 0, printed.output
    assert printed.stderr == ""
    assert "https://wiki.example.com/runbook#agenterrorratespike" in printed.stdout


def test_alert_queries_are_each_signal_and_expr() -> None:
    """alert_queries gives the live test every signal and every firing expression."""
    queries = alert_queries(DEFAULTS)
    rules = alert_rules(DEFAULTS)
    assert len(queries) == 2 * len(rules)
    assert {q.expr for q in queries} == {r.signal for r in rules} | {r.expr for r in rules}
    assert all(q.for_prometheus() == q.expr for q in queries)


def test_keel_render_alerts_writes_the_file_from_keel_yaml(tmp_path: Path) -> None:
    """keel render alerts reads the thresholds from keel.yaml and writes the file."""
    config = tmp_path / "keel.yaml"
    config.write_text("alerts:\n  error_rate:\n    threshold: 0.12\n")
    out = tmp_path / "agent_alerts.yml"
    result = CliRunner().invoke(
        app, ["--config", str(config), "render", "alerts", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert ") > 0.12\n" in yaml.safe_load(out.read_text())["groups"][0]["rules"][0]["expr"]


def test_keel_render_alerts_refuses_a_bad_threshold_naming_the_key(tmp_path: Path) -> None:
    """A threshold out of range exits 2 with a message that names the key."""
    config = tmp_path / "keel.yaml"
    config.write_text("alerts:\n  model_timeouts:\n    threshold: 5\n")
    result = CliRunner().invoke(app, ["--config", str(config), "render", "alerts", "--out", "-"])
    assert result.exit_code == 2, result.output
    assert "alerts.model_timeouts.threshold" in result.output


def test_quantile_cases_put_the_value_above_the_threshold() -> None:
    """The firing quantile cases' values lie above their thresholds (a sanity check of
    the generator: a bad case that is not bad would test nothing)."""
    thresholds = {
        "AgentContextWindowExhaustion": DEFAULTS.context_exhaustion.threshold,
        "AgentMemoryLatencyDegraded": DEFAULTS.memory_latency.threshold_s,
        "AgentSessionDurationAbnormal": DEFAULTS.session_duration.threshold_s,
    }
    for case in CASES_OF["defaults"]:
        for fired in case.fired:
            if case.alert in thresholds:
                assert math.isfinite(fired.value)
                assert fired.value > thresholds[case.alert], case.id


def test_the_readme_shows_the_default_settings() -> None:
    """The README's alerts: block is exactly the defaults (a changed default changes it)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Alerts\n")
    block = re.search(r"^```yaml\n(.*?)^```", readme[start:], re.M | re.S)
    assert block, "no yaml block in the README's Alerts section"
    shown = yaml.safe_load(block.group(1))["alerts"]
    assert AlertSettings.model_validate(shown) == DEFAULTS
    assert set(shown) == set(AlertSettings.model_fields)
