"""`keel config show`: every value with the layer it came from, and never a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.secrets import redact_url

SECRET = "sk-live-do-not-print-8f3a9c"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key_file = tmp_path / "openai_key"
    key_file.write_text(SECRET)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "admin_token").write_text(SECRET)
    path = tmp_path / "keel.yaml"
    path.write_text(
        f"secrets_dir: {secrets_dir}\n"
        "agent:\n  id: support\n"
        "store:\n  url: postgresql://keel:hunter2@db.internal:5432/keel\n"
        "models:\n"
        "  - name: openai\n"
        "    kind: openai\n"
        "    model: gpt-4o-mini\n"
        f"    api_key_file: {key_file}\n"
    )
    return path


def show(config: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(
        app, ["--config", str(config), "config", "show", "--json", *args], env=env
    )
    assert result.exit_code == 0, result.output
    rows: dict[str, dict[str, str]] = json.loads(result.stdout)
    return rows


def test_sources_name_the_layer_of_each_value(config: Path) -> None:
    """Values are attributed to default, file or env, whichever layer set them last."""
    rows = show(config, env={"KEEL_SERVER__PORT": "8099"})
    assert rows["agent.id"] == {"value": "support", "source": "file"}
    assert rows["server.port"] == {"value": "8099", "source": "env"}
    assert rows["server.host"] == {"value": "127.0.0.1", "source": "default"}
    assert rows["models[0].model"] == {"value": "gpt-4o-mini", "source": "file"}


def test_global_data_dir_option_is_the_cli_layer(config: Path, tmp_path: Path) -> None:
    """`keel --data-dir X` wins over the file and is reported as coming from cli."""
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "--data-dir", str(tmp_path / "d"), "config", "show", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data_dir"] == {
        "value": str(tmp_path / "d"),
        "source": "cli",
    }


def test_secret_values_never_appear_only_their_files(config: Path, tmp_path: Path) -> None:
    """Key files and secret dirs show as paths; their content and URL passwords never show."""
    for args in ([], ["--json"]):
        result = CliRunner().invoke(
            app, ["--config", str(config), "config", "show", *args], env={"COLUMNS": "300"}
        )
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
        assert "hunter2" not in result.output
        assert str(tmp_path / "openai_key") in result.output
    rows = show(config)
    assert rows["store.url"]["value"] == "postgresql://keel:***@db.internal:5432/keel"


def test_table_lists_key_value_and_source(config: Path) -> None:
    """Without --json the output is a table with the key, value and source columns."""
    result = CliRunner().invoke(
        app, ["--config", str(config), "config", "show"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "key" in line)
    assert "value" in header and "source" in header
    line = next(line for line in result.stdout.splitlines() if "agent.id" in line)
    assert "support" in line and "file" in line


def test_secret_looking_environment_variable_is_refused(config: Path) -> None:
    """A secret put in a plain KEEL_ variable is a config error (exit 2) that says to use a file."""
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "config", "show"],
        env={"KEEL_MODELS__0__API_KEY": SECRET},
    )
    assert result.exit_code == 2
    assert "_FILE" in result.stderr
    assert SECRET not in result.output


def test_redact_url_masks_only_the_password() -> None:
    """User, host and path stay readable; the password becomes ***."""
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("sqlite:///.keel/sessions.db") == "sqlite:///.keel/sessions.db"


def test_env_option_reads_the_overlay_and_shows_its_file(config: Path) -> None:
    """`keel --env production` reads keel.production.yaml beside keel.yaml: its values come
    from the overlay layer, named with its file; KEEL_ variables still win over it."""
    (config.parent / "keel.production.yaml").write_text(
        "agent:\n  version: v9\nserver:\n  port: 9100\n"
    )
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "--env", "production", "config", "show", "--json"],
        env={"KEEL_SERVER__PORT": "9200"},
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows["agent.version"] == {
        "value": "v9",
        "source": "overlay",
        "detail": "keel.production.yaml",
    }
    assert rows["server.port"] == {"value": "9200", "source": "env"}
    assert rows["agent.id"] == {"value": "support", "source": "file"}
    table = CliRunner().invoke(
        app, ["--config", str(config), "config", "show"], env={"KEEL_ENV": "production"} | WIDE
    )
    line = next(line for line in table.stdout.splitlines() if "agent.version" in line)
    assert "overlay (keel.production.yaml)" in line
    assert "environment production" in table.stdout


def test_a_missing_overlay_exits_2_naming_the_path(config: Path) -> None:
    """A named environment without its file is a configuration error naming the path."""
    result = CliRunner().invoke(app, ["--config", str(config), "--env", "qa", "config", "show"])
    assert result.exit_code == 2
    assert "keel.qa.yaml" in result.stderr.replace("\n", "")


WIDE = {"COLUMNS": "250"}

OVERRIDES = """
organizations:
  acme:
    agent.model_chain: premium
users:
  alice:
    guardrails.max_output_tokens: 256
  acme/bob:
    quotas.user_daily_tokens: 5000000
"""


@pytest.fixture
def live_config(tmp_path: Path) -> Path:
    """A keel.yaml with two providers, a premium chain and an overrides file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "overrides.yaml").write_text(OVERRIDES)
    path = tmp_path / "keel.yaml"
    path.write_text(
        f"data_dir: {data}\nsecrets_dir: null\n"
        "models:\n  - {name: a, kind: scripted}\n  - {name: b, kind: scripted}\n"
        "model_chains:\n  premium: [b, a]\n"
    )
    return path


def test_show_user_resolves_the_organization_and_user_overrides(live_config: Path) -> None:
    """--user bob --org acme: acme's chain from the org override, bob's quota from the user
    override, each naming the entry; other keys keep their fixed layers."""
    rows = show(live_config, "--user", "bob", "--org", "acme")
    assert rows["agent.model_chain"] == {"value": "premium", "source": "org", "detail": "acme"}
    assert rows["quotas.user_daily_tokens"] == {
        "value": "5000000",
        "source": "user",
        "detail": "acme/bob",
    }
    assert rows["guardrails.max_output_tokens"] == {"value": "512", "source": "default"}
    assert rows["models[1].name"] == {"value": "b", "source": "file"}


def test_show_user_is_scoped_like_a_turn(live_config: Path) -> None:
    """bob without an organization gets neither acme's nor acme/bob's values; alice alone
    gets hers; without --user nothing of the overrides file shows."""
    bob = show(live_config, "--user", "bob")
    assert bob["agent.model_chain"]["source"] == "default"
    assert bob["quotas.user_daily_tokens"]["source"] == "default"
    alice = show(live_config, "--user", "alice")
    assert alice["guardrails.max_output_tokens"] == {
        "value": "256",
        "source": "user",
        "detail": "alice",
    }
    assert show(live_config)["quotas.user_daily_tokens"] == {
        "value": "2000000",
        "source": "default",
    }


def test_show_user_table_names_the_override(live_config: Path) -> None:
    """The table's source column reads `org override (acme)` and `user override (acme/bob)`."""
    result = CliRunner().invoke(
        app,
        ["--config", str(live_config), "config", "show", "--user", "bob", "--org", "acme"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert "keel settings for bob of acme" in result.stdout
    lines = result.stdout.splitlines()
    chain = next(line for line in lines if "agent.model_chain" in line)
    assert "premium" in chain and "org override (acme)" in chain
    quota = next(line for line in lines if "quotas.user_daily_tokens" in line)
    assert "5000000" in quota and "user override (acme/bob)" in quota


def test_show_org_without_user_is_a_usage_error(live_config: Path) -> None:
    """--org and --task describe a user's turn; without --user they exit 2."""
    result = CliRunner().invoke(app, ["--config", str(live_config), "config", "show", "--org", "a"])
    assert result.exit_code == 2
    assert "--user" in result.output


def test_show_user_with_a_refused_overrides_file_shows_the_last_good_ones(
    live_config: Path,
) -> None:
    """An overrides file that fails validation: a warning naming entry and key, and the
    overrides replicas last applied (the last audited document) are shown instead; with
    none applied yet, none are."""
    from agentkeel.config.layers import load_settings
    from agentkeel.config.overrides import watch_overrides
    from agentkeel.resilience.clock import ManualClock

    data = live_config.parent / "data"
    settings = load_settings(config_path=live_config, environ={}).settings
    (data / "overrides.yaml").write_text("users:\n  bob:\n    server.port: 1\n")
    result = CliRunner().invoke(
        app, ["--config", str(live_config), "config", "show", "--user", "alice"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert "users.bob" in result.stderr and "'server.port' may not be changed" in result.stderr
    assert "no replica applied any overrides from it yet" in result.stderr
    (data / "overrides.yaml").write_text(OVERRIDES)
    watch_overrides(settings, clock=ManualClock(), actor="replica:r1").record()
    (data / "overrides.yaml").write_text("users:\n  bob:\n    server.port: 1\n")
    result = CliRunner().invoke(
        app,
        ["--config", str(live_config), "config", "show", "--json", "--user", "alice"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert "the ones replicas last applied" in result.stderr
    rows = json.loads(result.stdout)
    assert rows["guardrails.max_output_tokens"] == {
        "value": "256",
        "source": "user",
        "detail": "alice",
    }


def test_show_user_during_a_refused_flag_file_shows_the_accepted_copy(
    live_config: Path,
) -> None:
    """The flag file is refused after a good one was accepted: config show --user warns
    that it is refused and why, and resolves the flags replicas keep serving."""
    from agentkeel.config.flag_accepted import AcceptedFlags
    from agentkeel.config.flag_file import parse_flag_document

    data = live_config.parent / "data"
    flag_file = data / "flags.json"
    flag_file.write_text(json.dumps(FLAGS))
    copy = AcceptedFlags(data_dir=data, source=flag_file.absolute())
    copy.accept(parse_flag_document(FLAGS, origin="test"), actor="replica:r1", source_sha256="test")
    broken = json.loads(json.dumps(FLAGS))
    broken["flags"]["guardrails.max_output_tokens"]["defaultVariant"] = "huge"
    flag_file.write_text(json.dumps(broken))
    result = CliRunner().invoke(
        app,
        ["--config", str(live_config), "config", "show", "--json", "--user", "carol"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert "defaultVariant 'huge'" in result.stderr
    assert "The flag file is refused" in result.stderr and "by replica:r1" in result.stderr
    rows = json.loads(result.stdout)
    assert rows["guardrails.max_output_tokens"] == {
        "value": "200",
        "source": "flag",
        "detail": "variant short",
    }


def test_show_user_with_a_slash_and_no_org_says_how_it_reads_it(live_config: Path) -> None:
    """--user acme/bob without --org is one user id outside any organization: a warning
    says so and how to ask for bob of acme; the acme/bob entry does not apply."""
    result = CliRunner().invoke(
        app,
        ["--config", str(live_config), "config", "show", "--json", "--user", "acme/bob"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "the user id 'acme/bob' outside any organization" in warning
    assert "--user bob --org acme" in warning
    assert json.loads(result.stdout)["quotas.user_daily_tokens"]["source"] == "default"
    quiet = CliRunner().invoke(
        app,
        ["--config", str(live_config), "config", "show", "--json", "--user", "bob"],
        env=WIDE,
    )
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_show_names_the_layer_of_a_price_table(tmp_path: Path) -> None:
    """pricing set in keel.yaml is `file` for every way of showing it: the rows of config
    show (with and without --user) and the base of keel flags show."""
    config = tmp_path / "keel.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nsecrets_dir: null\n"
        "models:\n  - {name: a, kind: scripted}\n"
        "pricing:\n  a: {input_per_million: 1.5, output_per_million: 6.0}\n"
    )
    for extra in ((), ("--user", "bob")):
        rows = show(config, *extra)
        assert rows["pricing.a.input_per_million"] == {"value": "1.5", "source": "file"}
    result = CliRunner().invoke(
        app, ["--config", str(config), "flags", "show", "pricing", "--json"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["base"]["source"] == "file"


FLAGS = {
    "flags": {
        "guardrails.max_output_tokens": {
            "state": "ENABLED",
            "variants": {"short": 200, "long": 800},
            "defaultVariant": "short",
        },
        "agent.model_chain": {
            "state": "ENABLED",
            "variants": {"standard": "a", "premium": "premium"},
            "defaultVariant": "standard",
            "targeting": {"if": [{"==": [{"var": "organization"}, "acme"]}, "premium"]},
        },
    }
}


def test_a_user_override_wins_over_a_flag_which_wins_over_the_environment(
    live_config: Path,
) -> None:
    """Must show: guardrails.max_output_tokens is 100 in the production overlay, 150 in a
    KEEL_ variable, 200 by flag and 300 for bob of acme by override. `keel config show
    --user` shows each winning in turn, naming its layer."""
    data = live_config.parent / "data"
    (data / "flags.json").write_text(json.dumps(FLAGS))
    (data / "overrides.yaml").write_text(
        "users:\n  acme/bob:\n    guardrails.max_output_tokens: 300\n"
    )
    (live_config.parent / "keel.production.yaml").write_text(
        "guardrails:\n  max_output_tokens: 100\n"
    )
    env = {"KEEL_ENV": "production", "KEEL_GUARDRAILS__MAX_OUTPUT_TOKENS": "150"} | WIDE

    def shown(*args: str, environ: dict[str, str] = env) -> dict[str, dict[str, str]]:
        return show(live_config, *args, env=environ)

    key = "guardrails.max_output_tokens"
    assert shown(environ={"KEEL_ENV": "production"})[key] == {
        "value": "100",
        "source": "overlay",
        "detail": "keel.production.yaml",
    }
    assert shown()[key] == {"value": "150", "source": "env"}
    carol = shown("--user", "carol", "--org", "acme")
    assert carol[key] == {"value": "200", "source": "flag", "detail": "variant short"}
    assert carol["agent.model_chain"] == {
        "value": "premium",
        "source": "flag",
        "detail": "variant premium",
    }
    bob = shown("--user", "bob", "--org", "acme")
    assert bob[key] == {"value": "300", "source": "user", "detail": "acme/bob"}
    assert bob["agent.model_chain"]["source"] == "flag"

    table = CliRunner().invoke(
        app,
        ["--config", str(live_config), "config", "show", "--user", "bob", "--org", "acme"],
        env=env,
    )
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    tokens = next(line for line in lines if key in line)
    assert "300" in tokens and "user override (acme/bob)" in tokens
    chain = next(line for line in lines if "agent.model_chain" in line)
    assert "flag (variant premium)" in chain
