"""`keel flags list|show|set|validate` on the flag file of a data directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app as keel
from agentkeel.config.flag_accepted import AcceptedFlags
from agentkeel.config.flag_gate import FlagGate
from agentkeel.telemetry.audit_file import audit_file_path
from agentkeel.telemetry.audit_verify import read_audit_records
from tests.config.flag_helpers import ACME_PREMIUM, chain_flag, flag_settings, write_flags

CONFIG = """
models:
  - {name: a, kind: scripted}
  - {name: b, kind: scripted}
model_chains:
  b-first: [b, a]
"""


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    config = tmp_path / "keel.yaml"
    if not config.exists():
        config.write_text(CONFIG)
    argv = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "flags", *args]
    result = CliRunner().invoke(keel, argv, terminal_width=200)
    return result.exit_code, result.stdout, result.stderr


def test_set_creates_and_switches_a_flag_audited_from_and_to(tmp_path: Path) -> None:
    """set with --value creates the flag; set VARIANT switches the default; each change is
    one audit record (from -> to, cli actor) and the output says when replicas apply it."""
    code, out, err = run(tmp_path, "set", "agent.model_chain", "standard", "--value", "a")
    assert code == 0, err
    assert "agent.model_chain: flag created, serving variant standard" in out
    code, out, err = run(tmp_path, "set", "agent.model_chain", "premium", "--value", '"b-first"')
    assert code == 0, err
    assert "default variant standard -> premium" in out
    assert "Replicas apply it on their next turn, within 1s (flags.poll_interval_s)" in out
    flag_file = tmp_path / "data" / "flags.json"
    written = json.loads(flag_file.read_text())["flags"]["agent.model_chain"]
    assert written == {
        "state": "ENABLED",
        "variants": {"standard": "a", "premium": "b-first"},
        "defaultVariant": "premium",
    }
    records = list(read_audit_records(audit_file_path(tmp_path / "data")))
    assert [r["action"] for r in records] == ["flags.changed", "flags.changed"]
    assert all(r["actor"].startswith("cli:") for r in records)
    changes = records[1]["details"]["changes"]
    assert {
        "flag": "agent.model_chain",
        "change": "default_variant",
        "from": "standard",
        "to": "premium",
    } in changes
    code, out, _ = run(tmp_path, "set", "agent.model_chain", "premium")
    assert code == 0 and "nothing changed" in out


def test_a_change_set_by_the_cli_is_not_audited_again_by_replicas(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """set marks the document accepted: a replica's gate finds it in force already and
    writes no second audit record."""
    assert run(tmp_path, "set", "guardrails.max_steps_per_turn", "strict", "--value", "4")[0] == 0
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    source = tmp_path / "data" / "flags.json"
    gate = FlagGate(
        source=source.absolute(),
        accepted=AcceptedFlags(data_dir=tmp_path / "data", source=source.absolute()),
        settings=flag_settings(tmp_path / "data"),
        actor="replica:r1",
    )
    caplog.clear()
    gate.start()
    assert gate.document.flags["guardrails.max_steps_per_turn"].default_variant == "strict"
    assert not [r for r in caplog.records if r.name == "agentkeel.audit"]
    assert len(list(read_audit_records(audit_file_path(tmp_path / "data")))) == 1


def test_set_refuses_what_would_not_validate_and_writes_nothing(tmp_path: Path) -> None:
    """A variant the flag lacks, a value wrong for the setting, a key that is not live,
    a bad --state: exit 1 with the reason; the file stays as it was."""
    assert run(tmp_path, "set", "agent.model_chain", "standard", "--value", "a")[0] == 0
    flag_file = tmp_path / "data" / "flags.json"
    before = flag_file.read_bytes()
    code, _, err = run(tmp_path, "set", "agent.model_chain", "gold")
    assert code == 1 and "has no variant 'gold' (it has standard)" in err
    code, _, err = run(tmp_path, "set", "agent.model_chain", "gold", "--value", "platinum")
    assert code == 1 and "'platinum' is neither a model_chains name" in err
    code, _, err = run(tmp_path, "set", "server.port", "x", "--value", "9000")
    assert code == 1 and "not a setting flags may change" in err
    code, _, err = run(tmp_path, "set", "agent.tools", "none")
    assert code == 1 and "give --value to create it" in err
    code, _, err = run(tmp_path, "set", "agent.model_chain", "standard", "--state", "off")
    assert code == 1 and "use enabled or disabled" in err
    assert flag_file.read_bytes() == before


def test_list_shows_the_flags_and_the_accepted_copy(tmp_path: Path) -> None:
    """list: a table of the flags; --json with each flag and the accepted copy's state."""
    code, out, _ = run(tmp_path, "list")
    assert code == 0 and "No flags in" in out
    assert run(tmp_path, "set", "agent.memory_writes", "off", "--value", "false")[0] == 0
    code, out, _ = run(tmp_path, "list")
    assert code == 0 and "agent.memory_writes" in out and "off=false" in out
    assert "accepted copy: holds this file" in out
    code, out, _ = run(tmp_path, "list", "--json")
    listed = json.loads(out)
    assert listed["flags"]["agent.memory_writes"] == {
        "state": "ENABLED",
        "default_variant": "off",
        "variants": {"off": False},
        "targeting": False,
    }
    assert listed["accepted"]["current"] is True


def test_show_evaluates_for_a_user_and_organization(tmp_path: Path) -> None:
    """show: the definition, the value served for that context (variant, reason) and the
    base value it replaces, with the base's layer."""
    write_flags(
        tmp_path / "data" / "flags.json", {"agent.model_chain": chain_flag(targeting=ACME_PREMIUM)}
    )
    code, out, err = run(tmp_path, "show", "agent.model_chain", "--user", "ana", "--org", "acme")
    assert code == 0, err
    assert 'served for user ana of acme: "b-first" (variant premium, TARGETING_MATCH)' in out
    assert "replaces the base value null (default)" in out
    code, out, _ = run(
        tmp_path, "show", "agent.model_chain", "--user", "ana", "--org", "globex", "--json"
    )
    shown = json.loads(out)
    assert shown["served"] == {"value": "a", "variant": "standard", "reason": "DEFAULT"}
    assert shown["base"] == {"value": None, "source": "default"}
    assert shown["flag"]["targeting"] is True
    code, out, _ = run(tmp_path, "show", "guardrails.max_steps_per_turn", "--json")
    shown = json.loads(out)
    assert shown["flag"] is None and shown["served"] is None
    assert shown["not_served_because"] == "no flag sets this key"
    assert shown["base"]["value"] == 10
    code, _, err = run(tmp_path, "show", "server.port")
    assert code == 1 and "not a setting flags may change" in err


def test_validate_says_valid_or_lists_every_problem(tmp_path: Path) -> None:
    """validate: exit 0 with the count; exit 1 with every problem, each naming its flag."""
    good = tmp_path / "good.json"
    write_flags(
        good,
        {
            "agent.model_chain": chain_flag(),
            "agent.memory_writes": {"state": "ENABLED", "variants": {"on": True}},
        },
    )
    code, out, _ = run(tmp_path, "validate", str(good))
    assert code == 0 and "valid: 2 flags" in out
    bad = tmp_path / "bad.json"
    write_flags(
        bad,
        {
            "agent.model_chain": chain_flag("gold"),
            "guardrails.max_steps_per_turn": {"state": "ENABLED", "variants": {"x": 0}},
        },
    )
    code, _, err = run(tmp_path, "validate", str(bad))
    assert code == 1
    assert "the flag file is refused (2 problems)" in err
    assert "flag 'agent.model_chain': defaultVariant 'gold'" in err
    assert "flag 'guardrails.max_steps_per_turn' variant 'x'" in err
    code, _, err = run(tmp_path, "validate")
    assert code == 1 and "does not exist" in err


def test_set_on_a_key_that_is_not_live_says_so_first(tmp_path: Path) -> None:
    """set not.a.key VARIANT (no --value): the key is refused as not live, not as a flag
    that does not exist yet; nothing is written."""
    code, _, err = run(tmp_path, "set", "not.a.key", "v")
    assert code == 1
    assert "'not.a.key' is not a setting flags may change" in err
    assert "There is no flag" not in err and "--value" not in err
    assert not (tmp_path / "data" / "flags.json").exists()


def test_set_writes_nothing_when_its_audit_record_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: with the audit file unwritable, set exits 1 and neither the flag file
    nor the accepted copy changes, so no replica picks the change up unaudited."""
    from agentkeel.errors import AuditUnavailable

    assert run(tmp_path, "set", "agent.model_chain", "standard", "--value", "a")[0] == 0
    flag_file = tmp_path / "data" / "flags.json"
    copy = AcceptedFlags(data_dir=tmp_path / "data", source=flag_file.absolute())
    before = (flag_file.read_bytes(), copy.file.read_bytes())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AuditUnavailable("the audit file is not writable")

    monkeypatch.setattr("agentkeel.config.flag_accepted.audit", refuse)
    code, _, err = run(tmp_path, "set", "agent.model_chain", "premium", "--value", "b-first")
    assert code == 1 and "audit file is not writable" in err
    assert (flag_file.read_bytes(), copy.file.read_bytes()) == before
    assert [p.name for p in flag_file.parent.iterdir() if p.name.endswith(".tmp")] == []


def refuse_the_flag_file(tmp_path: Path) -> None:
    """A good file set by the CLI (accepted), then a hand edit that fails validation."""
    assert run(tmp_path, "set", "agent.model_chain", "premium", "--value", "b-first")[0] == 0
    write_flags(tmp_path / "data" / "flags.json", {"agent.model_chain": chain_flag("gold")})


def test_list_and_show_during_a_refused_file_show_what_replicas_serve(tmp_path: Path) -> None:
    """While the flag file is refused, list and show fall back to the accepted copy (the
    last good flags replicas keep serving), warn that the file is refused and why, and
    exit 0."""
    refuse_the_flag_file(tmp_path)
    code, out, err = run(tmp_path, "list")
    assert code == 0, err
    assert "the flag file is refused" in err and "defaultVariant 'gold'" in err
    assert "accepted copy replicas keep serving" in err
    assert "agent.model_chain" in out and "premium" in out
    code, out, err = run(tmp_path, "show", "agent.model_chain", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["served"]["variant"] == "premium" and shown["served"]["value"] == "b-first"
    assert "defaultVariant 'gold'" in shown["refused"]
    assert "the flag file is refused" in err


def test_a_refused_file_without_an_accepted_copy_shows_no_flags(tmp_path: Path) -> None:
    """Refused, and no replica or command ever accepted a file: nothing is served, and the
    warning says so."""
    write_flags(tmp_path / "data" / "flags.json", {"agent.model_chain": chain_flag("gold")})
    code, out, err = run(tmp_path, "show", "agent.model_chain", "--json")
    assert code == 0, err
    assert json.loads(out)["served"] is None
    assert "there is no accepted copy, so replicas serve no flags" in err
