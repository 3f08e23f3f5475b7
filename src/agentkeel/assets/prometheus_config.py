"""``prometheus.yml`` for the local stack, for compose and for Kubernetes service discovery.

Every target gets the same scrape jobs, so one dashboard and one rule file fit all
three: ``agent`` (the replicas), ``router``, ``memory`` and ``tools``. They differ in
how Prometheus finds the targets:

- ``local``: the router, memory and tool servers at the ports of the settings
  (``router.port``, ``memory.port``, ``tools.server.port``); the replicas from
  ``<data_dir>/prometheus/targets.json``, a ``file_sd`` file that ``keel up`` rewrites
  whenever its replicas change (a rollout's replicas of another version included), so
  Prometheus follows them without a reload. Alertmanager at ``127.0.0.1:9093``.
- ``compose``: the service names of the compose file (``router``, ``agent``,
  ``memory``, ``tools``) at the containers' ports; ``agent`` through DNS, so every
  replica of ``docker compose up --scale agent=N`` is scraped. Alertmanager at
  ``alertmanager:9093``.
- ``kubernetes``: pod discovery. Pods annotated ``prometheus.io/scrape: "true"`` are
  kept, ``prometheus.io/port`` and ``prometheus.io/path`` say where ``/metrics`` is;
  ``namespace``, ``pod``, ``job`` (from ``app.kubernetes.io/name``), ``component``
  (``app.kubernetes.io/component``) and ``app_version`` (``app.kubernetes.io/version``)
  are copied, nothing else. Alertmanager is the ``alertmanager`` service.

No target label is called ``version``: the behavioural metrics carry their own
``version`` label (the replica's ``agent.version``), and a target label of that name
would rename it to ``exported_version`` and break every per-version query. The
replica's version as a target label is ``app_version``.

>>> text = render_prometheus(settings, "local")
>>> write_replica_targets(settings.data_dir, manager.running_replicas())
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from agentkeel.config.durations import duration_seconds
from agentkeel.config.settings import KeelSettings
from agentkeel.deploy.types import ReplicaInfo
from agentkeel.errors import ConfigError
from agentkeel.ops.ports import url_host
from agentkeel.ops.stack_services import starts_memory_server, starts_tool_server
from agentkeel.storage.atomic import atomic_write

__all__ = [
    "ALERT_RULES_FILE",
    "DEFAULT_INTERVAL",
    "JOBS",
    "TARGETS",
    "Target",
    "render_prometheus",
    "replica_target_groups",
    "replica_targets_path",
    "write_replica_targets",
]

Target = Literal["local", "compose", "kubernetes"]
TARGETS: tuple[Target, ...] = ("local", "compose", "kubernetes")

JOBS = ("agent", "router", "memory", "tools")
"""The scrape jobs (the ``job`` label) of every target; also the compose file's service
names and, in Kubernetes, the pods' ``app.kubernetes.io/name``."""
ALERT_RULES_FILE = "agent_alerts.yml"
"""What ``keel render alerts`` writes; read from the directory of ``prometheus.yml``."""
DEFAULT_INTERVAL = "15s"
LOCAL_ALERTMANAGER = "127.0.0.1:9093"
SERVICE_ALERTMANAGER = "alertmanager:9093"
"""The compose service, or the Kubernetes service in Prometheus' namespace."""
TARGETS_FILE = Path("prometheus") / "targets.json"
"""Where ``keel up`` keeps its replicas for ``file_sd``, relative to the data directory."""
# How often Prometheus re-reads the targets file besides watching it: the watch needs
# the directory, which exists only once keel up has run.
_FILE_SD_REFRESH = "10s"
_DEFAULT_TIMEOUT = "10s"


def render_prometheus(
    settings: KeelSettings,
    target: Target,
    *,
    scrape_interval: str = DEFAULT_INTERVAL,
    evaluation_interval: str | None = None,
) -> str:
    """The ``prometheus.yml`` text for ``target``: scrape jobs for the router, every agent
    replica, the memory server and the tool server; ``agent_alerts.yml`` as a rule file;
    Alertmanager as the alert target.

    ``scrape_interval`` and ``evaluation_interval`` (default: the scrape interval) are
    Prometheus durations (``15s``, ``1m``); ``ConfigError`` for anything else or for an
    unknown ``target``.
    """
    scrape_s = _duration_s(scrape_interval, "scrape interval")
    evaluation = evaluation_interval or scrape_interval
    _duration_s(evaluation, "evaluation interval")
    builders = {"local": _local, "compose": _compose, "kubernetes": _kubernetes}
    if target not in builders:
        raise ConfigError(
            f"Prometheus target '{target}' is unknown; use one of {', '.join(TARGETS)}."
        )
    jobs, alertmanager = builders[target](settings)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            # Prometheus refuses a timeout above the interval.
            "scrape_timeout": _DEFAULT_TIMEOUT
            if scrape_s >= _duration_s(_DEFAULT_TIMEOUT, "timeout")
            else scrape_interval,
            "evaluation_interval": evaluation,
        },
        "rule_files": [ALERT_RULES_FILE],
        "alerting": {"alertmanagers": [alertmanager]},
        "scrape_configs": jobs,
    }
    header = (
        f"# prometheus.yml for agentkeel ({target}), written by "
        f"`keel render prometheus --target {target}` from the settings.\n"
        f"# Rules: {ALERT_RULES_FILE} beside this file (`keel render alerts`).\n"
        "# No target label is named `version`: the agent metrics carry their own\n"
        "# (agent.version); a replica's version as a target label is `app_version`.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


# -- the three targets ----------------------------------------------------------------


def _local(settings: KeelSettings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """keel up's ports; the replicas through the targets file keel up keeps."""
    jobs = [
        {
            "job_name": "agent",
            "file_sd_configs": [
                {
                    "files": [str(replica_targets_path(settings.data_dir))],
                    "refresh_interval": _FILE_SD_REFRESH,
                }
            ],
        }
    ]
    if settings.up.router:
        jobs.append(_static("router", settings.router.host, settings.router.port))
    if starts_memory_server(settings):
        jobs.append(_static("memory", settings.memory.host, settings.memory.port))
    if starts_tool_server(settings):
        server = settings.tools.server
        jobs.append(_static("tools", server.host, server.port))
    return jobs, {"static_configs": [{"targets": [LOCAL_ALERTMANAGER]}]}


def _compose(settings: KeelSettings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The compose services by name; every ``agent`` container through DNS (A records)."""
    jobs = [
        {
            "job_name": "agent",
            "dns_sd_configs": [{"names": ["agent"], "type": "A", "port": settings.server.port}],
        },
        _static("router", "router", settings.router.port),
        _static("memory", "memory", settings.memory.port),
        _static("tools", "tools", settings.tools.server.port),
    ]
    return jobs, {"static_configs": [{"targets": [SERVICE_ALERTMANAGER]}]}


def _kubernetes(settings: KeelSettings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pod discovery with the ``prometheus.io/*`` annotations; the relabelling keeps the
    pod's namespace, name and ``app.kubernetes.io`` name, component and version."""
    relabel = [
        _keep("__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true"),
        {
            "source_labels": ["__meta_kubernetes_pod_phase"],
            "regex": "Pending|Succeeded|Failed|Completed",
            "action": "drop",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_container_init"],
            "regex": "true",
            "action": "drop",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
            "regex": "(.+)",
            "target_label": "__metrics_path__",
        },
        # The annotated port on the pod's IP, IPv6 (bracketed) and IPv4.
        {
            "source_labels": [
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                "__meta_kubernetes_pod_ip",
            ],
            "regex": r"(\d+);(([A-Fa-f0-9]{1,4}::?){1,7}[A-Fa-f0-9]{1,4})",
            "replacement": "[$2]:$1",
            "target_label": "__address__",
        },
        {
            "source_labels": [
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                "__meta_kubernetes_pod_ip",
            ],
            "regex": r"(\d+);((([0-9]+?)(\.|$)){4})",
            "replacement": "$2:$1",
            "target_label": "__address__",
        },
        _copy("__meta_kubernetes_namespace", "namespace"),
        _copy("__meta_kubernetes_pod_name", "pod"),
        # The same job names as the local and compose targets (agent, router, ...).
        _copy("__meta_kubernetes_pod_label_app_kubernetes_io_name", "job"),
        _copy("__meta_kubernetes_pod_label_app_kubernetes_io_component", "component"),
        _copy("__meta_kubernetes_pod_label_app_kubernetes_io_version", "app_version"),
    ]
    jobs = [
        {
            "job_name": "agentkeel",
            "kubernetes_sd_configs": [{"role": "pod"}],
            "relabel_configs": relabel,
        }
    ]
    return jobs, {"static_configs": [{"targets": [SERVICE_ALERTMANAGER]}]}


def _static(job: str, host: str, port: int) -> dict[str, Any]:
    return {"job_name": job, "static_configs": [{"targets": [f"{_address(host)}:{port}"]}]}


def _keep(label: str, value: str) -> dict[str, Any]:
    return {"source_labels": [label], "regex": value, "action": "keep"}


def _copy(source: str, target: str) -> dict[str, Any]:
    # ``(.+)``: a pod without the label keeps the default (the job name, no label).
    return {"source_labels": [source], "regex": "(.+)", "target_label": target}


def _address(host: str) -> str:
    """A host as a scrape target has it: loopback for every interface, IPv6 bracketed."""
    host = url_host(host)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _duration_s(value: str, what: str) -> float:
    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(f"The {what}: {exc}.") from exc
    if seconds <= 0:
        raise ConfigError(f"The {what} '{value}' must be longer than zero, e.g. 15s.")
    return seconds


# -- keel up's replicas as file_sd targets -------------------------------------------------


def replica_targets_path(data_dir: Path) -> Path:
    """``<data_dir>/prometheus/targets.json``, absolute: the local config names it."""
    return data_dir.absolute() / TARGETS_FILE


def replica_target_groups(replicas: Iterable[ReplicaInfo]) -> list[dict[str, Any]]:
    """The replicas in ``file_sd`` form: one group per replica, labelled with its name
    (``replica``) and version (``app_version``)."""
    groups: list[dict[str, Any]] = []
    for replica in replicas:
        parts = urlsplit(replica.url)
        if parts.hostname is None or parts.port is None:
            raise ConfigError(f"Replica {replica.name} has no host and port in {replica.url!r}.")
        groups.append(
            {
                "targets": [f"{_address(parts.hostname)}:{parts.port}"],
                "labels": {"replica": replica.name, "app_version": replica.version},
            }
        )
    return groups


def write_replica_targets(data_dir: Path, replicas: Iterable[ReplicaInfo]) -> Path:
    """Replace the targets file with ``replicas`` (all at once: Prometheus re-reads it when
    it changes, and must never see half of it); returns its path."""
    path = replica_targets_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(replica_target_groups(replicas), indent=2) + "\n"
    atomic_write(path, text.encode(), durable=False, mode=0o644)
    return path
