"""The flag layer: each turn's values through OpenFeature and the flagd provider, targeted
per user and organization, rolled out by percentage, checked, counted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.provider.flagd.config import ResolverType
from prometheus_client import CollectorRegistry

from agentkeel.config.flag_file import FlagDocument, FlagFileError, validate_flag_document
from agentkeel.config.flag_layer import (
    MAX_UNDECLARED_VARIANTS,
    FlagLayer,
    evaluation_context,
    open_flag_layer,
)
from agentkeel.config.flag_provider import (
    WATCHER_POLL_S,
    BoundProvider,
    file_provider,
    flagd_provider,
)
from agentkeel.config.layers import load_settings
from agentkeel.config.live import LiveSettings, TurnContext
from agentkeel.config.quotas import ModelPrice
from agentkeel.errors import ConfigError
from agentkeel.telemetry.metrics import FlagMetrics
from tests.config.flag_helpers import ACME_PREMIUM, chain_flag, flag_settings, write_flags


def turn(user: str = "ana", org: str | None = None, task: str | None = None) -> TurnContext:
    return TurnContext(user_id=user, organization=org, agent_id="support", version="v1", task=task)


def document(tmp_path: Path, flags: dict[str, Any]) -> FlagDocument:
    return validate_flag_document(
        {"flags": flags}, origin="flags.json", settings=flag_settings(tmp_path)
    )


def values(layer: FlagLayer | None, context: TurnContext) -> dict[str, Any]:
    assert layer is not None
    found = layer.values_for(context)
    return dict(found[0].values) if found else {}


def test_a_model_chain_per_organization_and_per_user(tmp_path: Path) -> None:
    """acme's users get premium; ana of globex gets the default; a rule on the user picks
    bob wherever he is; the detail names the variant."""
    by_user = {"if": [{"in": [{"var": "user"}, ["bob"]]}, "premium"]}
    settings = flag_settings(tmp_path)
    flags = {
        "agent.model_chain": chain_flag(targeting=ACME_PREMIUM),
        "agent.memory_writes": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
            "targeting": {"if": [by_user["if"][0], "off"]},
        },
    }
    with open_flag_layer(settings, document=document(tmp_path, flags)) as layer:
        assert layer is not None
        [acme] = layer.values_for(turn("ana", "acme"))
        assert acme.layer == "flag"
        assert acme.values["agent.model_chain"] == "b-first"
        assert acme.detail["agent.model_chain"] == "variant premium"
        assert values(layer, turn("ana", "globex")) == {
            "agent.model_chain": "a",
            "agent.memory_writes": True,
        }
        assert values(layer, turn("bob", "globex"))["agent.memory_writes"] is False


def test_the_turn_context_is_what_targeting_sees(tmp_path: Path) -> None:
    """Targeting key <org>/<user> (or the user), attributes user, organization, agent,
    version, task, session; a rule on the task picks a chain per task."""
    context = evaluation_context(
        TurnContext("ana", "acme", "support", "v2", session_id="s1", task="triage")
    )
    assert context.targeting_key == "acme/ana"
    assert context.attributes == {
        "user": "ana",
        "organization": "acme",
        "agent": "support",
        "version": "v2",
        "task": "triage",
        "session": "s1",
    }
    assert evaluation_context(turn("ana")).targeting_key == "ana"
    per_task = {"if": [{"==": [{"var": "task"}, "triage"]}, "premium"]}
    flags = {"agent.model_chain": chain_flag(targeting=per_task)}
    with open_flag_layer(flag_settings(tmp_path), document=document(tmp_path, flags)) as layer:
        assert values(layer, turn(task="triage")) == {"agent.model_chain": "b-first"}
        assert values(layer, turn(task="billing")) == {"agent.model_chain": "a"}


def test_a_percentage_rollout_splits_users_near_its_share_and_keeps_each_user(
    tmp_path: Path,
) -> None:
    """fractional 20/80 over 1,000 users: about 20% get premium, and each user gets the
    same variant every turn and from another layer instance (another replica)."""
    rollout = {"fractional": [["premium", 20], ["standard", 80]]}
    flags = document(tmp_path, {"agent.model_chain": chain_flag(targeting=rollout)})
    settings = flag_settings(tmp_path)
    users = [f"user-{i}" for i in range(1000)]
    with (
        open_flag_layer(settings, document=flags) as one,
        open_flag_layer(settings, document=flags) as two,
    ):
        first = {u: values(one, turn(u, "acme"))["agent.model_chain"] for u in users}
        again = {u: values(one, turn(u, "acme"))["agent.model_chain"] for u in users}
        other = {u: values(two, turn(u, "acme"))["agent.model_chain"] for u in users}
    share = sum(1 for chain in first.values() if chain == "b-first") / len(users)
    assert 0.16 <= share <= 0.24, share
    assert first == again == other


def test_disabled_flags_and_no_default_variant_leave_the_setting_below(tmp_path: Path) -> None:
    """A disabled flag sets nothing (counted disabled); a flag without defaultVariant sets
    nothing where no rule matches (counted default)."""
    registry = CollectorRegistry()
    metrics = FlagMetrics(registry)
    flags = document(
        tmp_path,
        {
            "agent.model_chain": chain_flag("premium", state="DISABLED"),
            "guardrails.max_steps_per_turn": {
                "state": "ENABLED",
                "variants": {"tight": 2},
                "targeting": {"if": [{"==": [{"var": "organization"}, "acme"]}, "tight"]},
            },
        },
    )
    settings = flag_settings(tmp_path)
    with open_flag_layer(settings, document=flags) as opened:
        assert opened is not None
        layer = FlagLayer(
            client=opened.client, settings=settings, flags=lambda: flags.flags, metrics=metrics
        )
        assert values(layer, turn("ana", "globex")) == {}
        assert values(layer, turn("ana", "acme")) == {"guardrails.max_steps_per_turn": 2}
    sample = registry.get_sample_value
    assert (
        sample("agent_flag_evaluations_total", {"flag": "agent.model_chain", "variant": "disabled"})
        == 2
    )
    labels = {"flag": "guardrails.max_steps_per_turn"}
    assert sample("agent_flag_evaluations_total", {**labels, "variant": "default"}) == 1
    assert sample("agent_flag_evaluations_total", {**labels, "variant": "tight"}) == 1


def test_a_value_this_replica_cannot_use_falls_back_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chain this replica lacks (another replica accepted it): the turn keeps the
    settings below, counted as error, warned once a minute per flag."""
    caplog.set_level(logging.WARNING, logger="agentkeel.flags")
    flags = document(tmp_path, {"agent.model_chain": chain_flag("premium")})
    lacking = flag_settings(tmp_path, model_chains={})
    registry = CollectorRegistry()
    now = [1000.0]
    with open_flag_layer(lacking, document=flags) as opened:
        assert opened is not None
        layer = FlagLayer(
            client=opened.client,
            settings=lacking,
            flags=lambda: flags.flags,
            metrics=FlagMetrics(registry),
            monotonic=lambda: now[0],
        )
        for _ in range(3):
            assert layer.values_for(turn()) == ()
        now[0] += 61
        assert layer.values_for(turn()) == ()
    warnings = [r for r in caplog.records if "b-first" in r.getMessage()]
    assert len(warnings) == 2
    assert "the turn uses the settings below the flags" in warnings[0].getMessage()
    labels = {"flag": "agent.model_chain", "variant": "error"}
    assert registry.get_sample_value("agent_flag_evaluations_total", labels) == 4


def test_object_flags_set_tool_lists_and_prices(tmp_path: Path) -> None:
    """Lists and the price table are object flags; the turn's settings get them typed."""
    prices = {"gpt-x": {"input_per_million": 2.5, "output_per_million": 10}}
    flags = document(
        tmp_path,
        {
            "agent.tools": {
                "state": "ENABLED",
                "variants": {"calc": ["calculator"]},
                "defaultVariant": "calc",
            },
            "pricing": {"state": "ENABLED", "variants": {"list": prices}, "defaultVariant": "list"},
            "guardrails.context_trim_ratio": {
                "state": "ENABLED",
                "variants": {"one": 1},
                "defaultVariant": "one",
            },
        },
    )
    settings = flag_settings(tmp_path)
    with open_flag_layer(settings, document=flags) as layer:
        assert layer is not None
        resolved = LiveSettings(settings, layers=[layer]).for_turn(turn())
    assert resolved.tools == ("calculator",)
    assert resolved.pricing == {"gpt-x": ModelPrice(input_per_million=2.5, output_per_million=10)}
    assert resolved.guardrails.context_trim_ratio == 1.0
    assert resolved.sources["agent.tools"] == "flag"


def test_open_flag_layer_reads_the_configured_file(tmp_path: Path) -> None:
    """The one-shot layer commands use: the configured file, validated (a bad one raises
    its problems), a missing one is no flags, source none is no layer."""
    settings = flag_settings(tmp_path)
    with open_flag_layer(settings) as layer:
        assert values(layer, turn()) == {}
    write_flags(tmp_path / "flags.json", {"agent.model_chain": chain_flag("premium")})
    with open_flag_layer(settings) as layer:
        assert values(layer, turn()) == {"agent.model_chain": "b-first"}
        assert layer is not None
        outcome = layer.explain(turn(), "agent.model_chain")
        assert outcome is not None and (outcome.variant, outcome.reason) == ("premium", "STATIC")
        assert layer.explain(turn(), "agent.tools") is None
    write_flags(tmp_path / "flags.json", {"agent.model_chain": chain_flag("gold")})
    with pytest.raises(FlagFileError, match="defaultVariant 'gold'"), open_flag_layer(settings):
        pass
    with open_flag_layer(flag_settings(tmp_path, flags={"source": "none"})) as layer:
        assert layer is None


def test_two_layers_in_one_process_keep_their_own_flags(tmp_path: Path) -> None:
    """Each provider has an OpenFeature domain of its own."""
    settings = flag_settings(tmp_path)
    premium = document(tmp_path, {"agent.model_chain": chain_flag("premium")})
    standard = document(tmp_path, {"agent.model_chain": chain_flag("standard")})
    with (
        open_flag_layer(settings, document=premium) as one,
        open_flag_layer(settings, document=standard) as two,
    ):
        assert values(one, turn()) == {"agent.model_chain": "b-first"}
        assert values(two, turn()) == {"agent.model_chain": "a"}


def test_the_flagd_provider_is_configured_from_the_settings(tmp_path: Path) -> None:
    """source: flagd: host, port, TLS and selector come from flags:, always synced and
    evaluated in process; a file provider's own watcher polls every WATCHER_POLL_S."""
    settings = flag_settings(
        tmp_path,
        flags={
            "source": "flagd",
            "flagd_host": "flagd.internal",
            "flagd_port": 9015,
            "flagd_tls": True,
            "flagd_selector": "agents",
        },
    )
    config = flagd_provider(settings.flags).config
    assert (config.host, config.port, config.tls, config.selector) == (
        "flagd.internal",
        9015,
        True,
        "agents",
    )
    assert config.resolver is ResolverType.IN_PROCESS
    copy = tmp_path / "served.json"
    file_config = file_provider(copy).config
    assert file_config.resolver is ResolverType.FILE
    assert (file_config.offline_flag_source_path, file_config.deadline_ms) == (
        str(copy),
        WATCHER_POLL_S * 1000,
    )


def test_the_rpc_resolver_is_refused_saying_why_and_what_to_use(tmp_path: Path) -> None:
    """flagd_resolver: rpc (a network call per flag per turn, on the event loop) is a
    settings error naming the key, the reason and in-process instead."""
    with pytest.raises(ConfigError) as refused:
        load_settings(
            layers=[],
            overrides={"flags": {"source": "flagd", "flagd_resolver": "rpc", "flagd_port": 8013}},
        )
    message = refused.value.message
    assert "flags.flagd_resolver" in message and "'rpc'" in message
    assert "every turn" in message and "in-process" in message
    default = load_settings(layers=[], overrides={"flags": {"source": "flagd"}}).settings
    assert default.flags.flagd_resolver == "in-process"


def test_source_flagd_evaluates_every_live_key_and_bounds_variant_labels(tmp_path: Path) -> None:
    """Without a document (flagd's), every live key is asked: a missing flag is no value
    and not counted; variants count under their name up to a bound, then as other."""
    variants = {f"v{i}": i + 1 for i in range(20)}
    steps = {"state": "ENABLED", "variants": variants, "targeting": {"var": "user"}}
    flags = document(tmp_path, {"guardrails.max_steps_per_turn": steps})
    copy = tmp_path / "remote.json"
    copy.write_bytes(flags.content)
    bound = BoundProvider(file_provider(copy))
    registry = CollectorRegistry()
    try:
        layer = FlagLayer(
            client=bound.open(wait=True),
            settings=flag_settings(tmp_path),
            flags=lambda: None,
            metrics=FlagMetrics(registry),
        )
        for i in range(20):
            assert values(layer, turn(f"v{i}")) == {"guardrails.max_steps_per_turn": i + 1}
    finally:
        bound.close()
    counted = {
        sample.labels["variant"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "agent_flag_evaluations_total"
    }
    assert len(counted) == MAX_UNDECLARED_VARIANTS + 1
    assert counted["other"] == 20 - MAX_UNDECLARED_VARIANTS
