"""`keel up` after a rollout: the promoted version is started, a rollout half-way refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli import up as up_module
from agentkeel.cli.main import app
from agentkeel.cli.up import ROUTER_SERVICE, plan_stack
from agentkeel.config import KeelSettings
from agentkeel.deploy.state import ROLLOUTS_FILE, Release, ReleaseState, RolloutStore
from agentkeel.deploy.types import ReplicaSpec
from agentkeel.errors import ConfigError
from agentkeel.ops.stable_release import stable_spec

V2_SPEC = ReplicaSpec(version="v2", entrypoint="pkg.v2:agent", env={"KEEL_AGENT__NAME": "two"})


def record(data: Path, *releases: Release) -> None:
    async def write() -> None:
        async with RolloutStore(data / ROLLOUTS_FILE) as store:
            for release in releases:
                await store.save(release)

    data.mkdir(parents=True, exist_ok=True)
    asyncio.run(write())


def release(name: str, state: ReleaseState, *, at: float, version: str = "v2") -> Release:
    return Release(
        release=name,
        version=version,
        previous="v1",
        strategy="canary",
        started_at=at,
        updated_at=at,
        state=state,
        spec=V2_SPEC if version == "v2" else ReplicaSpec(version=version),
    )


def test_no_rollout_state_keeps_the_configured_version(tmp_path: Path) -> None:
    assert stable_spec(tmp_path, configured="v1") is None
    record(tmp_path)
    assert stable_spec(tmp_path, configured="v1") is None


def test_a_promoted_release_is_started_with_its_spec(tmp_path: Path) -> None:
    record(tmp_path, release("r1", "promoted", at=1.0))
    assert stable_spec(tmp_path, configured="v1") == V2_SPEC
    # keel.yaml names it already: nothing to change.
    assert stable_spec(tmp_path, configured="v2") is None


def test_after_a_rolled_back_release_the_previous_promoted_one_stays(tmp_path: Path) -> None:
    """v2 promoted, then v3 rolled back: v2 (with its spec) is still the stable version."""
    record(
        tmp_path,
        release("r1", "promoted", at=1.0),
        Release(
            release="r2",
            version="v3",
            previous="v2",
            strategy="canary",
            started_at=2.0,
            updated_at=2.0,
            state="rolled_back",
        ),
    )
    assert stable_spec(tmp_path, configured="v1") == V2_SPEC


@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_release_half_way_refuses_to_start(tmp_path: Path, state: ReleaseState) -> None:
    record(tmp_path, release("r1", state, at=1.0))
    with pytest.raises(ConfigError, match="keel rollout abort"):
        stable_spec(tmp_path, configured="v1")


def test_the_stack_plan_starts_the_promoted_version(tmp_path: Path) -> None:
    """Replicas get the promoted version, entrypoint and env; the router fronts them as it."""
    settings = KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "up": {"base_port": 18081, "router": True, "memory": False, "tools": False},
            "router": {"port": 18080},
            "agent": {"version": "v1"},
        }
    )
    plan = plan_stack(
        settings,
        config_path=None,
        start_local_model=False,
        admin_token_file=tmp_path / "token",
        stable=V2_SPEC,
    )
    assert set(plan.replicas.values()) == {"v2"}
    services = {spec.name: spec for spec in plan.services}
    for name in plan.replicas:
        env = services[name].env
        assert env["KEEL_AGENT__VERSION"] == "v2"
        assert env["KEEL_AGENT__ENTRYPOINT"] == "pkg.v2:agent"
        assert env["KEEL_AGENT__NAME"] == "two"
    backends = [arg for arg in services[ROUTER_SERVICE].command if "=http" in arg]
    assert backends and all(arg.startswith("v2=") for arg in backends)


def test_keel_up_refuses_while_a_rollout_is_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d"
    record(data, release("r1", "running", at=1.0))
    monkeypatch.setattr(up_module, "check_server_installed", lambda: None)
    result = CliRunner().invoke(app, ["up", "--data-dir", str(data), "--no-local-model"])
    assert result.exit_code == 2
    assert "keel rollout abort" in result.stderr and "r1" in result.stderr
    assert not (data / "logs").exists()
