"""`keel keys create|list|revoke` on a keys file in the data directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app as keel
from agentkeel.errors import Unauthorized
from agentkeel.identity.apikeys import ApiKeys
from agentkeel.telemetry.audit_file import audit_file_path
from agentkeel.telemetry.audit_verify import read_audit_records, verify_audit_file


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(keel, list(args), terminal_width=200)
    return result.exit_code, result.stdout, result.stderr


def test_create_shows_the_key_once_list_hides_it_revoke_stops_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """create prints the key (which then works); list never shows it nor its digest;
    after revoke the key is refused; both changes are audited with a cli actor."""
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    base = ("--data-dir", str(tmp_path), "keys")
    code, out, err = run(
        *base, "create", "--name", "ci", "--org", "acme", "--scope", "chat", "--expires", "90d"
    )
    assert code == 0, err
    key = out.strip()
    assert key.startswith("ak_") and "only time" in err
    keys = ApiKeys(tmp_path / "api_keys.yaml")
    assert keys.authenticate(key).credential == "api_key:ci"

    code, listed, _ = run(*base, "list", "--json")
    assert code == 0
    rows = json.loads(listed)
    assert [(r["name"], r["organization"], r["scopes"], r["status"]) for r in rows] == [
        ("ci", "acme", ["chat"], "active")
    ]
    assert rows[0]["expires_at"] is not None
    digest = keys.records()[0].digest
    _, table, _ = run(*base, "list")
    for shown in (listed, table):
        assert key not in shown and digest.split(":")[1] not in shown
    assert "ci" in table

    code, _, err = run(*base, "create", "--name", "ci", "--org", "acme", "--scope", "chat")
    assert code == 2 and "exists" in err

    code, out, _ = run(*base, "revoke", "ci")
    assert code == 0 and "Revoked" in out
    with pytest.raises(Unauthorized) as caught:
        keys.authenticate(key)
    assert caught.value.code == "key_revoked"
    actions = [(r.action, getattr(r, "actor", "")) for r in caplog.records if hasattr(r, "action")]
    assert [a for a, _ in actions] == ["keys.create", "keys.revoke"]
    assert all(actor.startswith("cli:") for _, actor in actions)
    assert all(key not in r.getMessage() for r in caplog.records)
    chained = audit_file_path(tmp_path)
    assert [r["action"] for r in read_audit_records(chained)] == ["keys.create", "keys.revoke"]
    assert verify_audit_file(chained).ok and key not in chained.read_text()


def test_file_option_and_bad_input(tmp_path: Path) -> None:
    """--file chooses the file; an unknown scope, a bad --expires and revoking an unknown
    name are one-line errors (exit 2)."""
    target = tmp_path / "elsewhere.yaml"
    code, _, err = run(
        "keys", "create", "--file", str(target), "--name", "a", "--org", "o", "--scope", "chat"
    )
    assert code == 0, err
    assert target.exists()
    assert (
        run(
            "keys", "create", "--file", str(target), "--name", "b", "--org", "o", "--scope", "root"
        )[0]
        == 2
    )
    code, _, err = run(
        "keys",
        "create",
        "--file",
        str(target),
        "--name",
        "c",
        "--org",
        "o",
        "--scope",
        "chat",
        "--expires",
        "soon",
    )
    assert code == 2 and "--expires" in err
    code, _, err = run("keys", "revoke", "--file", str(target), "nobody")
    assert code == 2 and "nobody" in err
