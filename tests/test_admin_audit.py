"""Every administrative action on every service writes an audit record.

The list below is the inventory: the action, where it is implemented, and the
audit action name it writes (with its outcome, on failure too). A new admin
route or state-changing command belongs here. The behaviour is driven for the
agent and memory servers in ``tests/runtime/test_admin_audit.py`` and
``tests/memory/test_admin_audit.py``; the router's in ``tests/router``, the
rollout, rollback and replica actions in their own tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "agentkeel"

ADMIN_ACTIONS: list[tuple[str, str, str]] = [
    # (what, module, audit action written)
    ("agent POST /admin/drain", "runtime/app.py", "agent.drain"),
    ("agent POST /admin/sessions/prune", "runtime/session_admin.py", "sessions.prune"),
    ("agent POST /admin/sessions/forget", "runtime/lifecycle.py", "sessions.forget"),
    ("router PUT /admin/versions/{v}", "router/admin.py", "router.put_version"),
    ("router DELETE /admin/versions/{v}", "router/admin.py", "router.remove_version"),
    ("router POST /admin/versions/{v}/retire", "router/admin.py", "router.retire_version"),
    ("router POST /admin/weights", "router/admin.py", "router.set_weights"),
    ("router POST /admin/replicas", "router/admin.py", "router.add_replica"),
    ("router POST /admin/replicas/remove", "router/admin.py", "router.remove_replica"),
    ("router POST /admin/replicas/drain", "router/admin.py", "router.drain_replica"),
    ("memory POST /admin/fence", "memory/app.py", "memory.fence.up"),
    ("memory DELETE /admin/fence", "memory/app.py", "memory.fence.down"),
    ("memory DELETE /admin/read-only", "memory/app.py", "memory.read_only.clear"),
    ("memory POST /v1/restore (snapshot or point in time)", "memory/app.py", "memory.restore"),
    ("memory POST /v1/snapshots", "memory/app.py", "memory.snapshot.create"),
    ("memory POST /v1/snapshots:prune", "memory/app.py", "memory.snapshot.prune"),
    (
        "memory POST /v1/quarantine/{id}/replay",
        "memory/app.py",
        "memory.quarantine.replay",
    ),
    ("memory DELETE /v1/namespaces/{ns}", "memory/app.py", "memory.delete_namespace"),
    ("keel up control POST /replicas", "ops/replicas.py", "stack.replicas.start"),
    ("keel up control POST /replicas/{name}/stop", "ops/replicas.py", "stack.replicas.stop"),
    ("keel rollout start", "deploy/controller.py", "rollout.start"),
    ("keel rollout promote/pause/resume/abort", "deploy/controller.py", "rollout.{request"),
    ("rollout weights", "deploy/strategies/base.py", "rollout.weights"),
    ("rollout retire previous", "deploy/strategies/base.py", "rollout.retire"),
    ("keel rollback (each step)", "deploy/rollback.py", "rollback."),
    ("keel logs prune", "cli/logs_cmd.py", "logs.prune"),
    ("keel up's log prune (at start, then every interval)", "ops/log_retention.py", "logs.prune"),
]


def _audited_actions(module: str) -> str:
    return (SRC / module).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("what", "module", "action"), ADMIN_ACTIONS, ids=[a[0] for a in ADMIN_ACTIONS]
)
def test_every_admin_action_has_an_audit_call(what: str, module: str, action: str) -> None:
    """The module that implements the action names its audit action in an audit call."""
    source = _audited_actions(module)
    assert re.search(r"\baudit(?:ed)?\(", source), f"{module} makes no audit call ({what})"
    assert f'"{action}' in source, f"{what}: {module} never writes audit action {action!r}"


def test_every_admin_route_of_the_memory_server_is_listed() -> None:
    """Each state-changing admin route of the memory server appears in the inventory."""
    source = _audited_actions("memory/app.py")
    routes = re.findall(
        r'Route\(\s*"([^"]+)",\s*endpoint\(api\.(\w+)\),\s*methods=\["(POST|DELETE|PATCH)"\]',
        source,
    )
    data_routes = {"create", "update", "delete", "batch", "delete_namespace"}
    admin = [(path, name) for path, name, _ in routes if name not in data_routes]
    listed = " ".join(what for what, _, _ in ADMIN_ACTIONS)
    for path, name in admin:
        assert path.split("{")[0].rstrip("/") in listed, f"{path} ({name}) is not listed"
