"""Running agentkeel on one machine: the process supervisor and the local model server."""

from agentkeel.ops.local_model import (
    check_server_installed,
    default_threads,
    find_bundled_model,
    local_model_base_url,
    local_model_command,
    local_model_ready_url,
    resolve_model_path,
)
from agentkeel.ops.supervisor import (
    RestartPolicy,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
    Supervisor,
    SupervisorEvent,
    dependency_levels,
)

__all__ = [
    "RestartPolicy",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "Supervisor",
    "SupervisorEvent",
    "check_server_installed",
    "default_threads",
    "dependency_levels",
    "find_bundled_model",
    "local_model_base_url",
    "local_model_command",
    "local_model_ready_url",
    "resolve_model_path",
]
