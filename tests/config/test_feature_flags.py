"""A replica's feature flags put together: a turn evaluates against one document while the
gate swaps in the next, and closing leaves no provider registered and no thread running."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.provider.no_op_provider import NoOpProvider
from prometheus_client import CollectorRegistry

from agentkeel.config.feature_flags import FeatureFlags, build_feature_flags
from agentkeel.config.flag_file import FlagDocument
from agentkeel.config.flag_provider import WATCHER_POLL_S, BoundProvider
from agentkeel.config.live import TurnContext
from agentkeel.telemetry.metrics import FlagMetrics
from tests.config.flag_helpers import chain_flag, flag_settings, write_flags

ANA = TurnContext(user_id="ana", organization=None, agent_id="support", version="v1")
WATCHER = "FlagdFileWatcherWorkerThread"


def steps_flag(variant: str) -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "variants": {"loose": 12, "strict": 4},
        "defaultVariant": variant,
    }


def built(tmp_path: Path) -> tuple[FeatureFlags, CollectorRegistry, Path]:
    """Flags over ``<tmp>/data/flags.json``, polled rarely: the tests drive the checks."""
    registry = CollectorRegistry()
    settings = flag_settings(tmp_path / "data", flags={"poll_interval_s": 300})
    flags = build_feature_flags(settings, metrics=FlagMetrics(registry), actor="replica:r1")
    assert flags is not None
    return flags, registry, tmp_path / "data" / "flags.json"


def values(flags: FeatureFlags) -> dict[str, Any]:
    return {k: v for lv in flags.values_for(ANA) for k, v in lv.values.items()}


def watchers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == WATCHER and t.is_alive()}


def served_provider(flags: FeatureFlags) -> Any:
    assert flags.served is not None
    return api.get_client(flags.served.domain).provider


async def hold_apply(flags: FeatureFlags) -> tuple[threading.Event, threading.Event]:
    """Make the gate's next apply stop after the provider read the new document, before
    the document swap: (entered, release)."""
    assert flags.gate is not None
    entered, release = threading.Event(), threading.Event()
    apply: Callable[[FlagDocument], None] | None = flags.gate.before_apply
    assert apply is not None

    def held(document: FlagDocument) -> None:
        apply(document)
        entered.set()
        assert release.wait(10.0), "the test never released the apply"

    flags.gate.before_apply = held
    return entered, release


async def test_a_turn_never_sees_half_a_reload(tmp_path: Path) -> None:
    """While the gate puts a new document in force (the provider has read it, the gate's
    document not swapped yet), a turn's evaluation waits; it then sees the new flags only:
    the changed value, and no evaluation error for the flag the new document removed."""
    flags, registry, source = built(tmp_path)
    write_flags(
        source,
        {"agent.model_chain": chain_flag(), "guardrails.max_steps_per_turn": steps_flag("loose")},
    )
    await flags.start()
    try:
        assert values(flags) == {"agent.model_chain": "a", "guardrails.max_steps_per_turn": 12}
        entered, release = await hold_apply(flags)
        assert flags.gate is not None
        write_flags(source, {"guardrails.max_steps_per_turn": steps_flag("strict")})
        checking = asyncio.ensure_future(asyncio.to_thread(flags.gate.check))
        assert await asyncio.to_thread(entered.wait, 10.0)
        turn = asyncio.ensure_future(asyncio.to_thread(values, flags))
        done, _ = await asyncio.wait({turn}, timeout=0.2)
        assert not done, "a turn evaluated while the flags in force were changing"
        release.set()
        await checking
        assert await turn == {"guardrails.max_steps_per_turn": 4}
        errors = registry.get_sample_value(
            "agent_flag_evaluations_total", {"flag": "agent.model_chain", "variant": "error"}
        )
        assert errors is None
    finally:
        await flags.aclose()


async def test_aclose_stops_the_provider_and_its_watcher_thread(tmp_path: Path) -> None:
    """After aclose the provider is unregistered and shut down, its watcher thread has
    ended and its scratch copy is gone."""
    before = watchers()
    flags, _, source = built(tmp_path)
    write_flags(source, {"agent.model_chain": chain_flag()})
    await flags.start()
    assert flags.served is not None
    copy = flags.served.file
    assert copy.exists()
    started = watchers() - before
    assert len(started) == 1
    provider = served_provider(flags)
    began = time.monotonic()
    await flags.aclose()
    assert time.monotonic() - began < WATCHER_POLL_S + 1.0
    assert not any(thread.is_alive() for thread in started)
    assert isinstance(served_provider(flags), NoOpProvider)
    assert provider.resolver.connector.active is False
    assert not copy.parent.exists()


async def test_aclose_waits_for_a_check_in_flight_and_nothing_registers_after(
    tmp_path: Path,
) -> None:
    """A check still in its worker thread when aclose is called (a first flag file being
    put in force) finishes before the provider is closed: no provider is left registered
    after aclose, whatever the check was doing."""
    flags, _, source = built(tmp_path)
    await flags.start()  # no flag file yet: no provider
    entered, release = threading.Event(), threading.Event()
    assert flags.gate is not None
    accept = flags.gate.accepted.accept
    finished = threading.Event()

    def slow_accept(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(10.0)
        try:
            return accept(*args, **kwargs)
        finally:
            finished.set()

    flags.gate.accepted.accept = slow_accept  # type: ignore[method-assign]
    write_flags(source, {"agent.model_chain": chain_flag()})
    checking = threading.Thread(target=flags.gate.check)
    checking.start()
    assert await asyncio.to_thread(entered.wait, 10.0)
    closing = asyncio.ensure_future(flags.aclose())
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done, "aclose returned while a check was still running"
    release.set()
    await closing
    assert finished.is_set()
    await asyncio.to_thread(checking.join, 10.0)
    assert isinstance(served_provider(flags), NoOpProvider)
    assert flags.values_for(ANA) == ()


def test_a_bound_provider_is_shut_down_before_close_returns() -> None:
    """close() shuts the provider down in the calling thread (the SDK alone would do it
    later in a thread of its own), then unregisters it."""
    calls: list[int] = []

    class Recording(NoOpProvider):
        def shutdown(self) -> None:
            calls.append(threading.get_ident())

    bound = BoundProvider(Recording())
    bound.open(wait=True)
    bound.close()
    assert calls[:1] == [threading.get_ident()]
    assert isinstance(bound.client().provider, NoOpProvider)
    assert not isinstance(bound.client().provider, Recording)


async def test_a_copy_the_provider_cannot_get_keeps_the_flags_in_force(tmp_path: Path) -> None:
    """When the provider's copy cannot be written, neither the provider nor the document
    changes (a turn keeps the old flags, whole); the next check puts the change in force."""
    flags, _, source = built(tmp_path)
    write_flags(source, {"agent.model_chain": chain_flag()})
    await flags.start()
    try:
        assert flags.gate is not None and flags.served is not None
        serve = flags.served.serve
        failures = [OSError(28, "No space left on device")]

        def full_disk(content: bytes) -> None:
            if failures:
                raise failures.pop()
            serve(content)

        flags.served.serve = full_disk  # type: ignore[method-assign]
        write_flags(source, {"agent.model_chain": chain_flag("premium")})
        await asyncio.to_thread(flags.gate.check)
        assert values(flags) == {"agent.model_chain": "a"}
        await asyncio.to_thread(flags.gate.check)
        assert values(flags) == {"agent.model_chain": "b-first"}
    finally:
        await flags.aclose()


async def test_a_copy_that_fails_to_apply_unexpectedly_is_tried_again(tmp_path: Path) -> None:
    """An unexpected error while a new accepted copy is applied leaves it unseen: the next
    check applies it, instead of serving the old flags until the copy changes again."""
    flags, _, source = built(tmp_path)
    write_flags(source, {"agent.model_chain": chain_flag()})
    await flags.start()
    try:
        assert flags.gate is not None and flags.served is not None
        serve = flags.served.serve
        failures = [RuntimeError("unexpected")]

        def flaky(content: bytes) -> None:
            if failures:
                raise failures.pop()
            serve(content)

        flags.served.serve = flaky  # type: ignore[method-assign]
        write_flags(source, {"agent.model_chain": chain_flag("premium")})
        with pytest.raises(RuntimeError):  # the gate's loop logs it and keeps watching
            await asyncio.to_thread(flags.gate.check)
        assert values(flags) == {"agent.model_chain": "a"}
        await asyncio.to_thread(flags.gate.check)
        assert values(flags) == {"agent.model_chain": "b-first"}
    finally:
        await flags.aclose()
