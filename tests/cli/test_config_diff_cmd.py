"""`keel config diff A B`: the settings two environments (or two files) differ in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app

WIDE = {"COLUMNS": "250"}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A base keel.yaml with a staging and a production overlay beside it."""
    base = tmp_path / "keel.yaml"
    base.write_text(
        "agent:\n  id: support\nserver:\n  port: 8081\n"
        "store:\n  url: postgresql://keel:base-pw@db:5432/keel\n"
    )
    (tmp_path / "keel.staging.yaml").write_text(
        "server:\n  port: 8181\nstore:\n  url: postgresql://keel:stage-pw@db-stage:5432/keel\n"
    )
    (tmp_path / "keel.production.yaml").write_text(
        "server:\n  port: 8181\n  drain_timeout_s: 120\n"
        "store:\n  url: postgresql://keel:prod-pw@db-prod:5432/keel\n"
        "models:\n  - {name: a, kind: scripted}\n  - {name: b, kind: scripted}\n"
    )
    return base


def diff(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["--config", str(config), "config", "diff", *args], env=(env or {}) | WIDE
    )
    return result.exit_code, result.stdout, result.stderr


def test_json_lists_every_differing_key_with_both_values_and_layers(config: Path) -> None:
    """Only keys whose effective values differ appear, each side with its value and layer;
    a key only one side has shows null on the other."""
    code, out, _ = diff(config, "staging", "production", "--json")
    assert code == 0, out
    payload = json.loads(out)
    assert (payload["a"], payload["b"]) == ("staging", "production")
    found = payload["differences"]
    assert "server.port" not in found  # 8181 on both sides
    assert "agent.id" not in found
    assert found["server.drain_timeout_s"] == {
        "a": {"value": "30.0", "source": "default"},
        "b": {"value": "120.0", "source": "overlay", "detail": "keel.production.yaml"},
    }
    assert found["models[0].name"]["a"] == {"value": "local", "source": "default"}
    assert found["models[0].name"]["b"]["value"] == "a"
    assert found["models[1].name"] == {
        "a": {"value": None, "source": None},
        "b": {"value": "b", "source": "overlay", "detail": "keel.production.yaml"},
    }


def test_secrets_are_masked_but_still_compared(config: Path) -> None:
    """Two URLs that differ only in their password differ, and neither password shows."""
    _, out, _ = diff(config, "staging", "production", "--json")
    store = json.loads(out)["differences"]["store.url"]
    assert store["a"]["value"] == "postgresql://keel:***@db-stage:5432/keel"
    assert "prod-pw" not in out and "stage-pw" not in out
    (config.parent / "keel.same-host.yaml").write_text(
        "server:\n  port: 8181\nstore:\n  url: postgresql://keel:other-pw@db-stage:5432/keel\n"
    )
    _, out, _ = diff(config, "staging", "same-host", "--json")
    assert list(json.loads(out)["differences"]) == ["store.url"]
    assert "other-pw" not in out


def test_the_table_names_the_layers(config: Path) -> None:
    """The table has the key, each side's value and layer, and counts the differences."""
    code, out, _ = diff(config, "staging", "production")
    assert code == 0
    assert "setting(s) differ" in out
    line = next(line for line in out.splitlines() if "server.drain_timeout_s" in line)
    assert "30.0" in line and "default" in line
    assert "120.0" in line and "overlay (keel.production.yaml)" in line


def test_exit_code_says_whether_they_differ(config: Path) -> None:
    """--exit-code: 1 when the two differ, 0 when they do not (as git diff --exit-code)."""
    assert diff(config, "staging", "production", "--exit-code")[0] == 1
    code, out, _ = diff(config, "staging", "staging", "--exit-code")
    assert code == 0
    assert "no differences between staging and staging" in out
    assert diff(config, "staging", "production")[0] == 0


def test_keel_variables_are_left_out(config: Path) -> None:
    """A KEEL_ variable or KEEL_ENV of the shell applies to neither side."""
    env = {"KEEL_SERVER__DRAIN_TIMEOUT_S": "5", "KEEL_ENV": "production"}
    code, out, _ = diff(config, "staging", "production", "--json", env=env)
    assert code == 0, out
    found = json.loads(out)["differences"]
    assert found["server.drain_timeout_s"]["a"]["value"] == "30.0"


def test_paths_are_read_on_their_own(config: Path) -> None:
    """A path side is that YAML file over the defaults, without the base file."""
    overlay = config.parent / "keel.production.yaml"
    code, out, _ = diff(config, str(config), str(overlay), "--json")
    assert code == 0, out
    found = json.loads(out)["differences"]
    assert found["agent.id"] == {
        "a": {"value": "support", "source": "file"},
        "b": {"value": "default", "source": "default"},
    }
    assert found["server.port"]["b"] == {"value": "8181", "source": "file"}


def test_a_missing_environment_or_file_exits_2(config: Path, tmp_path: Path) -> None:
    """An environment without its overlay, or a path that is no file, is a config error."""
    code, _, err = diff(config, "staging", "qa")
    assert code == 2
    assert "keel.qa.yaml" in err
    code, _, err = diff(config, "staging", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml" in err and "is not a file" in err
