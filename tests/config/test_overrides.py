"""The overrides file: checked against the allowlist, applied per organization and user."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.config.layers import load_settings
from agentkeel.config.live import LiveSettings, TurnContext
from agentkeel.config.overrides import Overrides, parse_overrides, read_overrides
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError

DOCUMENT = """
organizations:
  acme:
    agent.model_chain: premium
    guardrails.max_output_tokens: 300
users:
  alice:
    guardrails.max_output_tokens: 256
  acme/bob:
    quotas.user_daily_tokens: 5000000
    guardrails.max_output_tokens: 400
"""


@pytest.fixture
def settings() -> KeelSettings:
    return load_settings(
        layers=[],
        overrides={
            "models": [{"name": "a", "kind": "scripted"}, {"name": "b", "kind": "scripted"}],
            "model_chains": {"premium": ["b", "a"]},
        },
    ).settings


def turn(user: str, organization: str | None = None) -> TurnContext:
    return TurnContext(user_id=user, organization=organization, agent_id="support", version="v1")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_organization_then_the_user_entry_apply(tmp_path: Path, settings: KeelSettings) -> None:
    """bob of acme gets acme's values, then his own on top; the detail names the entry."""
    overrides = read_overrides(write(tmp_path / "o.yaml", DOCUMENT), settings=settings)
    found = overrides.values_for(turn("bob", "acme"))
    assert [lv.layer for lv in found] == ["org", "user"]
    assert found[0].values == {"agent.model_chain": "premium", "guardrails.max_output_tokens": 300}
    assert found[0].detail["agent.model_chain"] == "acme"
    assert found[1].detail["quotas.user_daily_tokens"] == "acme/bob"
    resolved = LiveSettings(settings, layers=[overrides]).for_turn(turn("bob", "acme"))
    assert resolved.guardrails.max_output_tokens == 400
    assert resolved.sources["guardrails.max_output_tokens"] == "user"
    assert resolved.sources["agent.model_chain"] == "org"
    assert resolved.model_chain == ("b", "a")
    assert resolved.quotas.user_daily_tokens == 5_000_000


def test_a_user_entry_is_scoped_to_its_organization(tmp_path: Path, settings: KeelSettings) -> None:
    """`acme/bob` is not bob of globex, and `alice` is alice outside any organization."""
    overrides = read_overrides(write(tmp_path / "o.yaml", DOCUMENT), settings=settings)
    assert overrides.values_for(turn("bob", "globex")) == []
    assert overrides.values_for(turn("bob")) == []
    alone = overrides.values_for(turn("alice"))
    assert [(lv.layer, dict(lv.values)) for lv in alone] == [
        ("user", {"guardrails.max_output_tokens": 256})
    ]
    in_acme = overrides.values_for(turn("alice", "acme"))
    assert [lv.layer for lv in in_acme] == ["org"]


def test_a_missing_or_empty_file_means_no_overrides(tmp_path: Path) -> None:
    """No file, or an empty one, is an empty document."""
    assert read_overrides(tmp_path / "none.yaml").entries == 0
    assert read_overrides(write(tmp_path / "empty.yaml", "")).entries == 0
    assert read_overrides(write(tmp_path / "blank.yaml", "users:\n")).entries == 0


def test_a_key_that_is_not_live_names_file_entry_and_key(
    tmp_path: Path, settings: KeelSettings
) -> None:
    """Only live settings may be overridden; the error names the file, the entry and the key
    and lists what is allowed."""
    path = write(tmp_path / "o.yaml", "users:\n  acme/bob:\n    server.port: 9000\n")
    with pytest.raises(ConfigError) as info:
        read_overrides(path, settings=settings)
    message = info.value.message
    assert str(path) in message
    assert "users.acme/bob" in message
    assert "'server.port' may not be changed" in message
    assert "agent.model_chain" in message  # the allowlist


def test_every_problem_is_reported_at_once(tmp_path: Path, settings: KeelSettings) -> None:
    """A wrong section, a wrong value, an unknown chain and a bad entry name in one file are
    four lines of one error."""
    path = write(
        tmp_path / "o.yaml",
        "defaults:\n  agent.tools: []\n"
        "organizations:\n"
        "  acme:\n    guardrails.max_steps_per_turn: many\n"
        "  globex:\n    agent.model_chain: nope\n"
        "users:\n  /bob:\n    agent.memory_writes: false\n"
        "  carol: 5\n",
    )
    with pytest.raises(ConfigError) as info:
        read_overrides(path, settings=settings)
    message = info.value.message
    assert "'defaults' is not a section" in message and "organizations and users" in message
    assert "organizations.acme" in message and "'guardrails.max_steps_per_turn' = 'many'" in message
    assert "organizations.globex" in message and "'nope'" in message
    assert "users./bob" in message and "organization/user" in message
    assert "users.carol: must map live settings to values" in message


def test_the_document_itself_must_be_a_mapping(tmp_path: Path) -> None:
    """A list or broken YAML is an error naming the file."""
    with pytest.raises(ConfigError, match="mapping"):
        read_overrides(write(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_overrides(write(tmp_path / "bad.yaml", "users: [unclosed\n"))
    with pytest.raises(ConfigError, match="users must map names"):
        parse_overrides({"users": ["bob"]}, origin="o.yaml")


def test_values_are_coerced_as_the_settings_are() -> None:
    """The pricing table and lists come out as the settings types."""
    overrides = parse_overrides(
        {
            "organizations": {
                "acme": {
                    "pricing": {"gpt": {"input_per_million": 1, "output_per_million": 2}},
                    "agent.tools": ["calculator"],
                }
            }
        },
        origin="o.yaml",
    )
    values = overrides.organizations["acme"]
    assert values["pricing"]["gpt"].output_per_million == 2.0
    assert overrides.to_json()["organizations"]["acme"]["pricing"] == {
        "gpt": {"input_per_million": 1.0, "output_per_million": 2.0}
    }


def test_an_empty_document_sets_nothing() -> None:
    """An entry with no keys adds no layer values."""
    overrides = Overrides(users={"bob": {}})
    assert overrides.values_for(turn("bob")) == []
