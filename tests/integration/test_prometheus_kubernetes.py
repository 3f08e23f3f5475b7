"""The Kubernetes target's relabelling, run by a real Prometheus: annotated pods are
scraped at their annotated port and path with namespace, pod, job, component and
app_version, the others are dropped, and the metrics keep their own ``version``.

Debian builds Prometheus without Kubernetes discovery, so the pods come from a
``file_sd`` file that carries the ``__meta_kubernetes_*`` labels pod discovery would
set; the relabelling is the rendered one, unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentkeel.assets.prometheus_config import render_prometheus
from agentkeel.config.settings import KeelSettings
from agentkeel.testing.ports import free_port_run
from tests.assets.test_prometheus_config import pods_as_file_sd
from tests.integration.prometheus_stack import (
    SCRAPE_TIMEOUT_S,
    Prometheus,
    start_prometheus,
    stop_prometheus,
)

pytestmark = pytest.mark.slow

METRICS_PATH = "/custom/metrics"
METRICS = b'agent_turns_total{agent="default",status="ok",version="v1"} 3\n'


class _MetricsHandler(BaseHTTPRequestHandler):
    """A pod's /metrics at the annotated path only (anything else is a 404)."""

    def do_GET(self) -> None:
        found = self.path == METRICS_PATH
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        if found:
            self.wfile.write(METRICS)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def metrics_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def pod(name: str, **meta: str) -> dict[str, Any]:
    """One pod's target group as Kubernetes pod discovery describes it (``meta``: more
    ``__meta_kubernetes_*`` labels, without the prefix), on a container port of its own."""
    labels = {
        "__meta_kubernetes_namespace": "shop",
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_ip": "127.0.0.1",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_container_init": "false",
        "__meta_kubernetes_pod_label_team": "support",
        **{f"__meta_kubernetes_{key}": value for key, value in meta.items()},
    }
    return {"targets": ["127.0.0.1:9999"], "labels": labels}


def annotated(port: int) -> dict[str, str]:
    return {
        "pod_annotation_prometheus_io_scrape": "true",
        "pod_annotation_prometheus_io_port": str(port),
        "pod_annotation_prometheus_io_path": METRICS_PATH,
        "pod_label_app_kubernetes_io_name": "agent",
        "pod_label_app_kubernetes_io_component": "replica",
        "pod_label_app_kubernetes_io_version": "v1.4.0",
    }


@pytest.fixture
def prometheus(tmp_path: Path, prometheus_bin: str, metrics_port: int) -> Iterator[Prometheus]:
    settings = KeelSettings.model_validate({"data_dir": str(tmp_path / "data")})
    config = yaml.safe_load(render_prometheus(settings, "kubernetes", scrape_interval="1s"))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(pods_as_file_sd(config, tmp_path)))
    pods = [
        pod("agent-5f7c9-x2k4q", **annotated(metrics_port)),
        pod("sidecar-free-9q8w7"),
        pod("agent-5f7c9-pending", **annotated(metrics_port), pod_phase="Pending"),
        pod("agent-5f7c9-init", **annotated(metrics_port), pod_container_init="true"),
        pod(
            "opted-out-1a2b3",
            **{**annotated(metrics_port), "pod_annotation_prometheus_io_scrape": "false"},
        ),
    ]
    (tmp_path / "pods.json").write_text(json.dumps(pods))
    running = start_prometheus(
        prometheus_bin,
        tmp_path / "prometheus.yml",
        port=free_port_run(1),
        directory=tmp_path,
    )
    yield running
    stop_prometheus(running)


def test_only_annotated_running_pods_are_scraped_with_the_copied_labels(
    prometheus: Prometheus, metrics_port: int
) -> None:
    """The one annotated, running, non-init pod is scraped at its annotated port and path
    with exactly the copied labels; unannotated, opted-out, pending and init containers
    are dropped; the scraped metric keeps its ``version`` beside the pod's app_version."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while True:
        targets = prometheus.api("targets")
        active = targets["activeTargets"]
        if active and active[0]["health"] == "up":
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the annotated pod was never scraped: {active}\n{prometheus.log_tail()}")
        time.sleep(0.2)
    [target] = active
    assert target["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}{METRICS_PATH}"
    assert target["labels"] == {
        "instance": f"127.0.0.1:{metrics_port}",
        "job": "agent",
        "namespace": "shop",
        "pod": "agent-5f7c9-x2k4q",
        "component": "replica",
        "app_version": "v1.4.0",
    }
    dropped = {
        t["discoveredLabels"]["__meta_kubernetes_pod_name"] for t in targets["droppedTargets"]
    }
    assert dropped == {
        "sidecar-free-9q8w7",
        "agent-5f7c9-pending",
        "agent-5f7c9-init",
        "opted-out-1a2b3",
    }
    [sample] = prometheus.query("agent_turns_total")
    assert sample["metric"]["version"] == "v1"
    assert sample["metric"]["app_version"] == "v1.4.0"
    assert "exported_version" not in sample["metric"]
