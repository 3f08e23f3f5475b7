"""ReplicaManager: replicas of any version started and stopped in a running supervisor
(fake replicas: tests/ops/fake_replica.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeel.deploy.types import ReplicaSpec
from agentkeel.errors import InvalidRequest, NotFound, Unavailable
from agentkeel.ops.replicas import ReplicaManager, check_extra_env
from tests.ops.fake_stack import fake_stack


def recorded_env(record_dir: Path, name: str) -> dict[str, str]:
    env: dict[str, str] = json.loads((record_dir / f"{name}.json").read_text())
    return env


async def ready_body(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{url}/ready")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_replica_of_another_version_gets_the_spec_and_the_stack_wiring(
    tmp_path: Path,
) -> None:
    """A v2 replica runs the template's command with the spec's version, entrypoint, config and
    env, the stack's data dir and session store, on a port above the running replicas."""
    config = tmp_path / "v2.yaml"
    config.write_text("agent:\n  system_prompt: Be brief.\n")
    async with fake_stack(tmp_path) as stack:
        spec = ReplicaSpec(
            version="v2",
            entrypoint="examples.echo_agent:agent",
            config=str(config),
            env={"KEEL_AGENT__TEMPERATURE": "0.5"},
        )
        [info] = await stack.manager.start_replicas(spec, 1)
        assert (info.name, info.version, info.state) == ("agent-v2-1", "v2", "ready")
        assert (await ready_body(info.url))["version"] == "v2"

        env = recorded_env(stack.record_dir, "agent-v2-1")
        assert env["KEEL_AGENT__VERSION"] == "v2"
        assert env["KEEL_AGENT__ENTRYPOINT"] == "examples.echo_agent:agent"
        assert env["KEEL_CONFIG"] == str(config)
        assert env["KEEL_AGENT__TEMPERATURE"] == "0.5"
        assert env["KEEL_SERVER__REPLICA_ID"] == "agent-v2-1"
        # Its log files carry its own name: one writer per file.
        assert env["KEEL_LOGGING__SERVICE_NAME"] == "agent-v2-1"
        v1_env = recorded_env(stack.record_dir, "replica-1")
        assert env["KEEL_DATA_DIR"] == v1_env["KEEL_DATA_DIR"]
        # Its own keel.yaml still serves the stack's sessions.
        assert env["KEEL_STORE__URL"].endswith("data/sessions.db")

        listed = await stack.manager.list_replicas()
        assert [(r.name, r.version, r.state) for r in listed] == [
            ("replica-1", "v1", "ready"),
            ("agent-v2-1", "v2", "ready"),
        ]
        ports = [int(r.url.rsplit(":", 1)[1]) for r in listed]
        assert ports[1] > ports[0]

        more = await stack.manager.start_replicas(ReplicaSpec(version="v2"), 2)
        assert [r.name for r in more] == ["agent-v2-2", "agent-v2-3"]
        more_ports = [int(r.url.rsplit(":", 1)[1]) for r in more]
        assert min(more_ports) > ports[1] and len(set(more_ports)) == 2
        # Without a config of its own a replica reads the stack's.
        assert "KEEL_CONFIG" not in recorded_env(stack.record_dir, "agent-v2-2")
        assert len(stack.changes) == 2


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [
        (ReplicaSpec(version="v 2"), 1, "is not a version name"),
        (ReplicaSpec(version=""), 1, "is not a version name"),
        (ReplicaSpec(version="v2"), 0, "count must be between 1 and 16"),
        (ReplicaSpec(version="v2"), 17, "count must be between 1 and 16"),
        (ReplicaSpec(version="v2", entrypoint="no_colon"), 1, "package.module:object"),
        (ReplicaSpec(version="v2", config="relative.yaml"), 1, "must be an absolute path"),
        (ReplicaSpec(version="v2", config="/nonexistent/keel.yaml"), 1, "does not exist"),
        (ReplicaSpec(version="v2", env={"PATH": "/tmp"}), 1, "only KEEL_\\* settings"),
        (ReplicaSpec(version="v2", env={"keel_agent__id": "x"}), 1, "only KEEL_\\* settings"),
        (ReplicaSpec(version="v2", env={"KEEL_DATA_DIR": "/elsewhere"}), 1, "set by keel up"),
        (ReplicaSpec(version="v2", env={"KEEL_STORE__URL": "sqlite:///x"}), 1, "set by keel up"),
        (
            ReplicaSpec(version="v2", env={"KEEL_LOGGING__SERVICE_NAME": "router"}),
            1,
            "set by keel up",
        ),
        (ReplicaSpec(version="v2", env={"KEEL_LOGGING__DIR": "/tmp/x"}), 1, "set by keel up"),
        (ReplicaSpec(version="v2", env={"KEEL_NOPE": "1"}), 1, "names no setting"),
        (ReplicaSpec(version="v2", env={"KEEL_AGENT__VERSONN": "x"}), 1, "do not load"),
        (
            ReplicaSpec(version="v2", env={"KEEL_MODELS__0__API_KEY": "x"}),
            1,
            "looks like a secret",
        ),
        (
            ReplicaSpec(
                version="v2", env={"KEEL_AGENT__SYSTEM_PROMPT": "use sk-" + "a" * 30 + " here"}
            ),
            1,
            "looks like a secret",
        ),
    ],
)
async def test_a_bad_spec_is_refused_before_anything_starts(
    tmp_path: Path, spec: ReplicaSpec, count: int, message: str
) -> None:
    """Each bad version, count, entrypoint, config or env is an InvalidRequest saying what is
    wrong; no replica starts."""
    async with fake_stack(tmp_path) as stack:
        with pytest.raises(InvalidRequest, match=message):
            await stack.manager.start_replicas(spec, count)
        assert [r.name for r in await stack.manager.list_replicas()] == ["replica-1"]
        assert stack.changes == []


def test_extra_env_accepts_plain_settings_and_file_paths() -> None:
    """Plain settings and *_FILE paths pass the check (they carry no secret)."""
    check_extra_env(
        {
            "KEEL_AGENT__SYSTEM_PROMPT": "You are terse.",
            "KEEL_MODELS__0__API_KEY_FILE": "/run/secrets/openai",
            "KEEL_SERVER__DRAIN_TIMEOUT_S": "5",
        }
    )


async def test_replicas_that_never_get_ready_are_all_stopped_and_named(tmp_path: Path) -> None:
    """All or nothing: when a replica exits before ready, the error names its log file and
    none of the call's replicas is left running."""
    async with fake_stack(tmp_path) as stack:
        with pytest.raises(Unavailable) as caught:
            await stack.manager.start_replicas(
                ReplicaSpec(version="v3", entrypoint="broken:agent"), 2
            )
        message = str(caught.value)
        assert "exited with code 2 before it was ready" in message
        assert str(stack.log_dir / "agent-v3-") in message
        assert "boom: cannot import broken:agent" in message
        assert [r.name for r in await stack.manager.list_replicas()] == ["replica-1"]
        assert [s.name for s in stack.supervisor.status()] == ["replica-1"]


async def test_stop_drains_one_replica_and_leaves_the_rest(tmp_path: Path) -> None:
    """Stopping a replica (also one keel up started itself) drains it: a turn in flight
    finishes; the others keep running; an unknown name is NotFound listing the replicas."""
    import asyncio

    async with fake_stack(tmp_path) as stack:
        [v2] = await stack.manager.start_replicas(ReplicaSpec(version="v2"), 1)
        replica_1 = (await stack.manager.list_replicas())[0]
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            turn = asyncio.create_task(client.post(f"{replica_1.url}/turn?s=1.0"))
            await asyncio.sleep(0.3)
            await stack.manager.stop_replica("replica-1", drain=True)
            assert (await turn).status_code == 200
            assert (await ready_body(v2.url))["version"] == "v2"
        assert [r.name for r in await stack.manager.list_replicas()] == ["agent-v2-1"]
        with pytest.raises(NotFound, match="replicas: agent-v2-1"):
            await stack.manager.stop_replica("replica-1")


async def test_a_busy_port_is_skipped(tmp_path: Path) -> None:
    """The next port that cannot be bound (something else listens) is passed over."""
    async with fake_stack(tmp_path) as stack:
        replica_port = int((await stack.manager.list_replicas())[0].url.rsplit(":", 1)[1])
        busy = {replica_port + 1}
        manager = ReplicaManager(
            supervisor=stack.supervisor,
            template=stack.template,
            replicas={"replica-1": "v1"},
            port_free=lambda host, port: port not in busy,
        )
        [info] = await manager.start_replicas(ReplicaSpec(version="v2"), 1)
        assert info.url.endswith(f":{replica_port + 2}")
