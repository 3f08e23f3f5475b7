"""``keel secrets rotate`` and ``status`` against a real agent replica (uvicorn in a
thread): a rotation to the end, a second run that does not rotate, the status
table, and a refusal (exit 2) while a rollout is running."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.config.settings import KeelSettings
from agentkeel.deploy.state import Release, RolloutStore
from agentkeel.runtime.app import create_app
from agentkeel.secrets.files import FileSecretSource
from tests.secrets.serving import serve

OLD = "sk-old-cli-0123456789abc"
NEW = "sk-new-cli-9876543210abc"
ADMIN = "admin-token-cli-0123456789abcdef"


def write_stack(tmp_path: Path) -> tuple[Path, KeelSettings]:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "openai_api_key").write_text(OLD + "\n")
    (tmp_path / "admin_token").write_text(ADMIN + "\n")
    config = tmp_path / "keel.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"secrets_dir: {secrets_dir}\n"
        "models:\n"
        "  - {name: openai, kind: openai, base_url: 'http://127.0.0.1:9/v1',\n"
        "     api_key_secret: openai_api_key, tokenizer: bytes}\n"
    )
    settings = KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "secrets_dir": str(secrets_dir),
            "server": {"admin_token_file": str(tmp_path / "admin_token")},
            "agent": {"tools": []},
            "models": [
                {
                    "name": "openai",
                    "kind": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key_secret": "openai_api_key",
                    "tokenizer": "bytes",
                }
            ],
        }
    )
    return config, settings


def test_rotate_runs_to_the_end_once_and_status_shows_it(tmp_path: Path) -> None:
    """Exit 0 with the new generation, a reminder to revoke at the provider; a second
    run says when it was rotated and when it is due, and rotates nothing; status lists
    the generation and the finished rotation; the replica reports generation 2 alone."""
    config, settings = write_stack(tmp_path)
    new_file = tmp_path / "new.key"
    new_file.write_text(NEW)
    runner = CliRunner()
    with serve(create_app(settings, run_sweeper=False), "replica") as url:
        args = ["--config", str(config), "secrets", "rotate", "openai_api_key"]
        common = ["--service", url, "--token-file", str(tmp_path / "admin_token")]
        result = runner.invoke(
            app, [*args, "--new-value-file", str(new_file), "--deadline", "1s", *common]
        )
        assert result.exit_code == 0, result.output
        assert "rotated to generation 2" in result.output
        assert "revoke the old key" in result.output and "openai" in result.output
        assert NEW not in result.output and OLD not in result.output
        again = runner.invoke(app, [*args, "--generate", *common])
        assert again.exit_code == 0, again.output
        assert "was rotated at" in again.output and "due on" in again.output
        report = httpx.get(
            f"{url}/admin/secrets", headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()
    secret = FileSecretSource(root=tmp_path / "secrets").read("openai_api_key")
    assert secret is not None and secret.generations == (2,)
    held = {entry["path"]: entry for entry in report["secrets"]}
    assert held["openai_api_key"]["generations"] == [2]
    assert NEW not in json.dumps(report)
    status = runner.invoke(app, ["--config", str(config), "secrets", "status", "--json"])
    assert status.exit_code == 0, status.output
    rows = {row["name"]: row for row in json.loads(status.output)["secrets"]}
    assert rows["openai_api_key"]["generations"] == [2]
    assert rows["openai_api_key"]["rotation"].startswith("rotated")
    assert rows["openai_api_key"]["due_at"] > time.time() + 89 * 86400


def test_rotate_is_refused_with_exit_2_while_a_rollout_runs(tmp_path: Path) -> None:
    """The running release is named; the secret keeps its one generation."""
    config, _ = write_stack(tmp_path)

    async def start_rollout() -> None:
        async with RolloutStore(tmp_path / "data" / "rollouts.db") as store:
            now = time.time()
            await store.create(
                Release(
                    release="v2-20261201T1230",
                    version="v2",
                    previous="v1",
                    strategy="canary",
                    started_at=now,
                    updated_at=now,
                )
            )

    asyncio.run(start_rollout())
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "secrets", "rotate", "openai_api_key", "--generate"],
    )
    assert result.exit_code == 2, result.output
    assert "v2-20261201T1230" in result.output
    secret = FileSecretSource(root=tmp_path / "secrets").read("openai_api_key")
    assert secret is not None and secret.generations == (1,)


def test_every_secrets_command_has_an_example() -> None:
    """rotate and status show an ``Example:`` in --help."""
    for command in ("rotate", "status"):
        result = CliRunner().invoke(app, ["secrets", command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output
