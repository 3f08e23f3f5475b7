"""Flag documents: flagd's syntax, then keel's rules, every problem named at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentkeel.config.flag_changes import describe_changes, flag_changes
from agentkeel.config.flag_file import (
    FlagDocument,
    FlagFileError,
    load_flag_file,
    parse_flag_document,
    setting_kind,
    validate_flag_document,
)
from agentkeel.errors import ConfigError
from tests.config.flag_helpers import ACME_PREMIUM, chain_flag, flag_settings, write_flags


def problems_of(data: dict[str, Any], tmp_path: Path) -> list[str]:
    with pytest.raises(FlagFileError) as caught:
        validate_flag_document(data, origin="flags.json", settings=flag_settings(tmp_path))
    return list(caught.value.problems)


def test_a_good_document_with_targeting_and_a_rollout_passes(tmp_path: Path) -> None:
    """Dotted live keys are flag keys; a model chain per organization, a percentage
    rollout and object flags (a tool list, the price table) validate."""
    rollout = {"fractional": [["standard", 90], ["premium", 10]]}
    document = validate_flag_document(
        {
            "flags": {
                "agent.model_chain": chain_flag(
                    targeting={"if": [ACME_PREMIUM["if"][0], "premium", rollout]}
                ),
                "agent.tools": {
                    "state": "ENABLED",
                    "variants": {"all": ["calculator", "current_time"], "none": []},
                    "defaultVariant": "all",
                },
                "pricing": {
                    "state": "DISABLED",
                    "variants": {"list": {"m": {"input_per_million": 1, "output_per_million": 2}}},
                    "defaultVariant": "list",
                },
            }
        },
        origin="flags.json",
        settings=flag_settings(tmp_path),
    )
    chain = document.flags["agent.model_chain"]
    assert (chain.default_variant, chain.enabled) == ("standard", True)
    assert chain.targeting is not None
    assert not document.flags["pricing"].enabled
    assert len(document.sha256) == 64 and json.loads(document.content)["flags"]


def test_yaml_files_and_shared_evaluators_are_flagd_format(tmp_path: Path) -> None:
    """A .yaml flag file is read as YAML; a $ref to $evaluators is resolved for the checks."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "$evaluators:\n"
        "  acme: {'if': [{'==': [{var: organization}, acme]}, premium]}\n"
        "flags:\n"
        "  agent.model_chain:\n"
        "    state: ENABLED\n"
        "    variants: {standard: a, premium: b-first}\n"
        "    defaultVariant: standard\n"
        "    targeting: {$ref: acme}\n"
    )
    document = load_flag_file(path, settings=flag_settings(tmp_path))
    assert document.flags["agent.model_chain"].targeting == ACME_PREMIUM


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    """Each kind of bad flag is reported, each naming its flag (and variant), in one error."""
    problems = problems_of(
        {
            "flag": {},
            "flags": {
                "server.port": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"},
                "agent.model_chain": {
                    "state": "ENABLED",
                    "variants": {"standard": "a", "gold": "platinum", "none": None},
                    "defaultVariant": "premium",
                },
                "guardrails.max_steps_per_turn": {
                    "state": "ENABLED",
                    "variants": {"zero": 0, "text": "four", "half": 4.5},
                    "defaultVariant": "zero",
                },
                "agent.memory_writes": {"state": "ON", "variants": {"on": True}},
                "agent.tools": {"state": "ENABLED", "variants": {}},
                "guardrails.max_output_tokens": {
                    "state": "ENABLED",
                    "variants": {"short": 128},
                    "defaultVariant": "short",
                    "rules": [],
                },
            },
        },
        tmp_path,
    )
    expected = [
        "unknown top-level key(s) 'flag'",
        "flag 'server.port': not a setting flags may change",
        "flag 'agent.model_chain' variant 'gold'",
        "agent.model_chain 'platinum' is neither a model_chains name",
        "flag 'agent.model_chain' variant 'none': null cannot be served",
        "flag 'agent.model_chain': defaultVariant 'premium' is not one of its variants",
        "flag 'guardrails.max_steps_per_turn' variant 'zero'",
        "flag 'guardrails.max_steps_per_turn' variant 'text'",
        "flag 'guardrails.max_steps_per_turn' variant 'half'",
        "flag 'agent.memory_writes': state is 'ON'",
        "flag 'agent.tools': variants must be a non-empty object",
        "flag 'guardrails.max_output_tokens': flagd refuses it: unknown field 'rules'",
    ]
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)
    # The unknown chain's problem is one line naming both the variant and the chain.
    assert len(problems) == len(expected) - 1, problems


def test_targeting_that_cannot_be_served_is_refused(tmp_path: Path) -> None:
    """A rule returning an undeclared variant, an operator flagd lacks, an attribute keel
    never sets, an unknown $ref and a fractional weight that is not whole."""
    targeting = {
        "if": [
            {"==": [{"var": "org"}, "acme"]},
            "gold",
            {"starts_wth": [{"var": "user"}, "a"]},
            {"$ref": "missing"},
            {"fractional": [["standard", 50.5], ["silver", 50]]},
        ]
    }
    problems = problems_of(
        {"flags": {"agent.model_chain": chain_flag(targeting=targeting)}}, tmp_path
    )
    joined = "\n".join(problems)
    assert "reads the attribute 'org', which keel never sets" in joined
    assert "can return 'gold', which is not one of its variants (standard, premium)" in joined
    assert "unknown operator 'starts_wth'" in joined
    assert "refers to $evaluators 'missing'" in joined
    assert "fractional weight 50.5 of 'standard' is not a whole number" in joined
    assert "can return 'silver'" in joined
    assert all(problem.startswith("flag 'agent.model_chain' targeting:") for problem in problems)


def test_syntax_errors_name_the_file_and_where(tmp_path: Path) -> None:
    """Not JSON, not YAML, not a mapping, a missing file: a FlagFileError (a ConfigError)
    naming the file and the position."""
    settings = flag_settings(tmp_path)
    broken = tmp_path / "flags.json"
    broken.write_text('{"flags": {\n  "agent.tools": }')
    with pytest.raises(FlagFileError) as caught:
        load_flag_file(broken, settings=settings)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.message.startswith(f"{broken}: the flag file is refused (1 problem)")
    assert "not valid JSON" in caught.value.message and "line 2" in caught.value.message
    listed = tmp_path / "flags.yml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(FlagFileError, match="the document is a list"):
        load_flag_file(listed, settings=settings)
    with pytest.raises(FlagFileError, match="does not exist"):
        load_flag_file(tmp_path / "absent.json", settings=settings)


def test_the_canonical_form_ignores_key_order_and_spacing(tmp_path: Path) -> None:
    """Two spellings of one document have one hash: replicas and the CLI agree on it."""
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    write_flags(one, {"agent.model_chain": chain_flag()})
    flag = chain_flag()
    two.write_text(json.dumps({"flags": {"agent.model_chain": dict(reversed(flag.items()))}}))
    settings = flag_settings(tmp_path)
    first, second = load_flag_file(one, settings=settings), load_flag_file(two, settings=settings)
    assert first.sha256 == second.sha256 and first.content == second.content
    assert FlagDocument.empty().flags == {}


def test_setting_kinds_follow_the_settings_types() -> None:
    """Each live key is evaluated as the OpenFeature type its setting has."""
    assert setting_kind("agent.model_chain") == "string"
    assert setting_kind("agent.memory_writes") == "boolean"
    assert setting_kind("guardrails.max_steps_per_turn") == "integer"
    assert setting_kind("guardrails.context_trim_ratio") == "float"
    assert setting_kind("agent.tools") == "object"
    assert setting_kind("pricing") == "object"


def test_changes_say_what_changed_from_what_to_what() -> None:
    """The audit's change list: flags added and removed, default variant, variant
    values, state and targeting."""
    old = parse_flag_document(
        {
            "flags": {
                "agent.model_chain": chain_flag(),
                "agent.memory_writes": {"state": "ENABLED", "variants": {"on": True}},
            }
        },
        origin="old",
    )
    changed = chain_flag("premium", targeting=ACME_PREMIUM, state="DISABLED")
    changed["variants"] = {"standard": "a", "premium": "b", "gold": "b-first"}
    new = parse_flag_document(
        {
            "flags": {
                "agent.model_chain": changed,
                "guardrails.max_steps_per_turn": {"state": "ENABLED", "variants": {"x": 4}},
            }
        },
        origin="new",
    )
    changes = flag_changes(old, new)
    assert [(c["flag"], c["change"], c.get("variant")) for c in changes] == [
        ("agent.memory_writes", "removed", None),
        ("agent.model_chain", "state", None),
        ("agent.model_chain", "default_variant", None),
        ("agent.model_chain", "variant", "gold"),
        ("agent.model_chain", "variant", "premium"),
        ("agent.model_chain", "targeting", None),
        ("guardrails.max_steps_per_turn", "added", None),
    ]
    assert changes[2]["from"] == "standard" and changes[2]["to"] == "premium"
    assert changes[4]["from"] == "b-first" and changes[4]["to"] == "b"
    assert changes[3]["from"] is None and changes[3]["to"] == "b-first"
    assert "agent.model_chain: default variant standard -> premium" in describe_changes(changes)
