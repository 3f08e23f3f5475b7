"""A real ``keel up`` scraped by a real Prometheus, after traffic that moves every metric
the dashboard and the alerts read: the module-scoped fixture ``prometheus_stack``.

``keel up`` runs the router, two replicas, the memory server and the tool server over
two scripted models (``primary``, priced, and ``backup``, not priced); Prometheus
(Debian's package, ``make test`` installs it) runs on a free port with its TSDB in a
temporary directory, a 1 s scrape interval and the ``prometheus.yml`` that
``render_prometheus(settings, "local")`` writes, so the replicas are found through the
targets file ``keel up`` keeps.

The primary model's script, walked per session on each replica (the router spreads a
session's turns over both): a ``memory_store`` call, then a failing ``calculator`` call
beside a ``memory_search``, then three server errors (retried, then the backup answers),
then a turn on which both models fail (503); so each session talks until a turn fails.
Each session gets feedback and most end (``DELETE``), so the session histograms get
samples. Around them: a session that stays live, the caller's mistakes (404, 413, 422),
one user who uses up the daily token quota (429), and the memory server's own
operations (a failed read, a search, a snapshot and its verification, an integrity
check). Then the fixture waits until Prometheus has scraped every target twice, so
``rate()`` has two samples.

Left out, because they need an incident or a set-up of their own: the caller's own
provider keys (``agent_byok_tokens_total``), feature flags, redactions, tool refusals
and truncation, breaker transitions, and the router's upstream errors and session
moves.

A test module changes the stack by overriding a module-scoped fixture:
``stack_overrides`` (settings merged into the fixture's ``keel.yaml``) or
``stack_rules`` (the text of ``agent_alerts.yml``, from the settings; none by default).
Every assertion on the stack should carry ``stack.diagnostics()``: Prometheus' log,
``keel up``'s output and each service's log tail.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentkeel.assets.prometheus_config import ALERT_RULES_FILE, render_prometheus
from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.testing.ports import free_port_run
from tests.conftest import debian_tool
from tests.integration.test_keel_up_e2e import KeelUp, launch_keel_up, stop_keel_up

SCRAPE_INTERVAL = "1s"
PROMETHEUS_READY_TIMEOUT_S = 60.0
SCRAPE_TIMEOUT_S = 60.0
PRIMARY_MODEL = "scripted-primary"
BACKUP_MODEL = "scripted-backup"
MAX_INPUT_CHARS = 2000
ENDED_SESSIONS = 4
QUOTA_USER = "heavy"
QUOTA_TURNS_AT_MOST = 40
# Each replica walks a session's script on the turns it serves (the router spreads a
# session's turns over both), so every session talks until a turn fails.
TURNS_PER_SESSION_AT_MOST = 8
PRIMARY_SCRIPT = {
    "on_end": "echo",
    "steps": [
        {"tool_calls": [{"tool": "memory_store", "arguments": {"content": "Sails a red dinghy"}}]},
        {"say": "Noted."},
        {
            "tool_calls": [
                {"tool": "calculator", "arguments": {"expression": "1 / 0"}},
                {"tool": "memory_search", "arguments": {"query": "dinghy"}},
            ]
        },
        {"say": "That has no answer, but you sail a red dinghy."},
        # Retried twice on the primary, then the backup answers.
        {"error": "server_error"},
        {"error": "server_error"},
        {"error": "server_error"},
        # The same again, and the backup fails too: the turn fails (503).
        {"error": "server_error"},
        {"error": "server_error"},
        {"error": "server_error"},
    ],
}
BACKUP_SCRIPT = {
    "on_end": "echo",
    "steps": [
        {"say": "The backup model answers."},
        {"error": "server_error"},
        {"error": "server_error"},
        {"error": "server_error"},
    ],
}

RulesFor = Callable[[KeelSettings], str]


@dataclass(frozen=True, slots=True)
class StackPorts:
    """One run of free loopback ports: replicas first, then the other services."""

    base: int

    @property
    def replicas(self) -> tuple[int, int]:
        return self.base, self.base + 1

    @property
    def memory(self) -> int:
        return self.base + 2

    @property
    def tools(self) -> int:
        return self.base + 3

    @property
    def router(self) -> int:
        return self.base + 4

    @property
    def prometheus(self) -> int:
        # base + 5 and up: where keel up puts a replica started while it runs.
        return self.base + 7

    @classmethod
    def free(cls) -> StackPorts:
        return cls(base=free_port_run(8))


def stack_config(ports: StackPorts, directory: Path) -> dict[str, Any]:
    """The fixture's ``keel.yaml`` as a mapping (its scripts written into ``directory``)."""
    primary = directory / "primary-script.yaml"
    backup = directory / "backup-script.yaml"
    primary.write_text(yaml.safe_dump(PRIMARY_SCRIPT, sort_keys=False))
    backup.write_text(yaml.safe_dump(BACKUP_SCRIPT, sort_keys=False))
    return {
        "log_level": "warning",
        "models": [
            {"name": "primary", "kind": "scripted", "model": PRIMARY_MODEL, "script": str(primary)},
            {"name": "backup", "kind": "scripted", "model": BACKUP_MODEL, "script": str(backup)},
        ],
        # Only the primary has a price: the backup's calls count as unpriced.
        "pricing": {PRIMARY_MODEL: {"input_per_million": 3.0, "output_per_million": 15.0}},
        "quotas": {"user_daily_tokens": 60_000},
        "agent": {"tools": ["calculator", "current_time", "memory_search", "memory_store"]},
        "guardrails": {"max_input_chars": MAX_INPUT_CHARS, "max_output_tokens": 64},
        "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
        # Every session walks the whole script: the breaker must not skip the primary.
        "breaker": {"failure_threshold": 1000},
        "memory": {"port": ports.memory},
        "tools": {"server": {"port": ports.tools}},
        "router": {"port": ports.router},
        "up": {"base_port": ports.base, "replicas": 2},
        "server": {"drain_timeout_s": 5},
    }


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, mapping by mapping (lists are replaced)."""
    result = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# -- Prometheus ------------------------------------------------------------------------


@dataclass
class Prometheus:
    """A Prometheus process and its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """``GET /api/v1/<path>``'s JSON body, whatever its status."""
        with httpx.Client(base_url=self.url, timeout=30.0, trust_env=False) as client:
            response = client.get(f"/api/v1/{path}", params=params)
        try:
            body = response.json()
        except ValueError:
            return {"status": "error", "errorType": response.status_code, "error": response.text}
        return dict(body)

    def api(self, path: str, **params: Any) -> Any:
        """``GET /api/v1/<path>``'s ``data``; fails the test with Prometheus' answer and log
        unless the status is ``success``."""
        body = self.get(path, **params)
        if body.get("status") != "success":
            pytest.fail(
                f"Prometheus /api/v1/{path} {params}: {body.get('errorType')} "
                f"{body.get('error')}\n{self.log_tail()}"
            )
        return body["data"]

    def raw_query(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query`` of ``expr`` as Prometheus answered (an error included)."""
        return self.get("query", query=expr)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or the scalar, as one sample) ``expr`` evaluates to now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def series(self, selector: str) -> list[dict[str, str]]:
        """Label sets of the series ``selector`` matches (the last five minutes)."""
        return list(self.api("series", **{"match[]": selector, "start": time.time() - 300}))

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "--- prometheus log\n" + "\n".join(text.splitlines()[-lines:])


def start_prometheus(binary: str, config: Path, *, port: int, directory: Path) -> Prometheus:
    """``prometheus`` on 127.0.0.1:``port`` with its TSDB in ``directory``; returns once
    it answers ``/-/ready`` (fails the test with its log otherwise)."""
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Lookback for instant queries: a target whose last scrape is older is gone.
                "--query.lookback-delta=1m",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
        )
    prometheus = Prometheus(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + PROMETHEUS_READY_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}\n{prometheus.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{prometheus.url}/-/ready").status_code == 200:
                    return prometheus
            time.sleep(0.2)
    stop_prometheus(prometheus)
    pytest.fail(
        f"prometheus was not ready in {PROMETHEUS_READY_TIMEOUT_S}s\n{prometheus.log_tail()}"
    )


def stop_prometheus(prometheus: Prometheus) -> None:
    if prometheus.proc.poll() is None:
        prometheus.proc.terminate()
        try:
            prometheus.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prometheus.proc.kill()
            prometheus.proc.wait()


# -- traffic --------------------------------------------------------------------------


@dataclass
class Traffic:
    """What the traffic did, for assertions on what Prometheus scraped."""

    statuses: Counter[int] = field(default_factory=Counter)
    """Status codes of the requests sent through the router."""
    ended_sessions: int = 0
    turns_of_ended_sessions: int = 0
    """Acknowledged turns of the sessions that ended."""
    stored_memories: int = 0
    """Turns whose ``memory_store`` call stored a memory."""
    live_sessions: list[str] = field(default_factory=list)
    memory_operations: Counter[str] = field(default_factory=Counter)
    """Memory server operations called directly (operation -> calls)."""
    finished_at: float = 0.0


def _expect(
    response: httpx.Response, status: int, what: str, diagnostics: Callable[[], str]
) -> None:
    if response.status_code != status:
        pytest.fail(
            f"{what}: expected {status}, got {response.status_code} {response.text}\n"
            f"{diagnostics()}"
        )


def drive_traffic(
    *, router: str, memory: str, data_dir: Path, diagnostics: Callable[[], str]
) -> Traffic:
    """Sessions through the router and operations on the memory server (see the module
    docstring); fails the test when an answer is not the one the script leads to."""
    traffic = Traffic()
    with httpx.Client(base_url=router, timeout=60.0, trust_env=False) as client:

        def send(method: str, path: str, status: int, what: str, **kwargs: Any) -> httpx.Response:
            response = client.request(method, path, **kwargs)
            traffic.statuses[response.status_code] += 1
            _expect(response, status, what, diagnostics)
            return response

        def talk(session: str, content: str) -> httpx.Response:
            response = client.post(f"/v1/sessions/{session}/messages", json={"content": content})
            traffic.statuses[response.status_code] += 1
            if response.status_code == 200:
                traffic.stored_memories += sum(
                    1
                    for call in response.json()["tool_calls"]
                    if (call["name"], call["status"]) == ("memory_store", "success")
                )
            return response

        for number in range(ENDED_SESSIONS + 1):
            user = f"user-{number}"
            created = send("POST", "/v1/sessions", 201, "create a session", json={"user_id": user})
            session = created.json()["session_id"]
            answered = 0
            for turn in range(1, TURNS_PER_SESSION_AT_MOST + 1):
                # The opening line tells the scripted model's conversations apart.
                response = talk(session, f"{user}, turn {turn}: I sail a red dinghy.")
                if response.status_code == 503:
                    break
                _expect(response, 200, f"turn {turn} of {user}", diagnostics)
                answered += 1
            else:
                pytest.fail(f"no turn of {user} failed as the script says\n{diagnostics()}")
            send(
                "POST",
                f"/v1/sessions/{session}/feedback",
                201,
                "feedback",
                json={"score": number % 6},
            )
            if number < ENDED_SESSIONS:
                send("DELETE", f"/v1/sessions/{session}", 200, "end a session")
                traffic.ended_sessions += 1
                traffic.turns_of_ended_sessions += answered
            else:
                traffic.live_sessions.append(session)

        # The caller's mistakes: an unknown session, too long a message, an empty one.
        live = traffic.live_sessions[0]
        send("GET", "/v1/sessions/no-such-session", 404, "an unknown session")
        send(
            "POST",
            f"/v1/sessions/{live}/messages",
            413,
            "too long a message",
            json={"content": "x" * (MAX_INPUT_CHARS + 1)},
        )
        send("POST", f"/v1/sessions/{live}/messages", 422, "an empty message", json={"content": ""})

        # One user spends the daily token quota: long messages until a 429.
        created = send("POST", "/v1/sessions", 201, "the quota user", json={"user_id": QUOTA_USER})
        session = created.json()["session_id"]
        long_message = "Please read this long message. " * (MAX_INPUT_CHARS // 32)
        for turn in range(QUOTA_TURNS_AT_MOST):
            if talk(session, f"{turn}: {long_message}").status_code == 429:
                break
        else:
            pytest.fail(f"{QUOTA_USER} never used up the daily token quota\n{diagnostics()}")

    _memory_operations(memory, data_dir, traffic, diagnostics)
    traffic.finished_at = time.time()
    return traffic


def _memory_operations(
    memory: str, data_dir: Path, traffic: Traffic, diagnostics: Callable[[], str]
) -> None:
    """A failed read, a search, a snapshot and its verification, an integrity check."""
    agent_token = (data_dir / "memory_agent_token").read_text().strip()
    admin_token = (data_dir / "admin_token").read_text().strip()
    agent = {"Authorization": f"Bearer {agent_token}"}
    admin = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=memory, timeout=60.0, trust_env=False) as client:
        calls: list[tuple[str, str, str, dict[str, str], dict[str, Any], int]] = [
            ("get_memory", "GET", "/v1/memories/no-such-memory", agent, {}, 404),
            (
                "search_memory",
                "GET",
                "/v1/memories",
                agent,
                {"params": {"namespace": "agent:default/user:user-0", "q": "dinghy"}},
                200,
            ),
            ("create_snapshot", "POST", "/v1/snapshots", admin, {"json": {"label": "e2e"}}, 201),
        ]
        for operation, method, path, headers, kwargs, status in calls:
            response = client.request(method, path, headers=headers, **kwargs)
            _expect(response, status, f"memory {operation}", diagnostics)
            traffic.memory_operations[operation] += 1
            if operation == "create_snapshot":
                snapshot = response.json()["id"]
        verified = client.post(f"/v1/snapshots/{snapshot}/verify", headers=admin)
        _expect(verified, 200, "memory verify_snapshot", diagnostics)
        traffic.memory_operations["verify_snapshot"] += 1
        checked = client.get("/v1/integrity", headers=admin)
        _expect(checked, 200, "memory check_integrity", diagnostics)
        traffic.memory_operations["check_integrity"] += 1


# -- waiting for Prometheus -----------------------------------------------------------


def _scraped_at(target: dict[str, Any]) -> float:
    """A target's last scrape as epoch seconds (0 before the first)."""
    text = str(target.get("lastScrape") or "")
    if not text or text.startswith("0001-"):
        return 0.0
    return datetime.fromisoformat(text).timestamp()


def wait_for_scrapes(
    prometheus: Prometheus,
    *,
    after: float,
    jobs: Mapping[str, int],
    rounds: int = 2,
    diagnostics: Callable[[], str],
) -> None:
    """Wait until each job has its number of targets up and every target has been scraped
    ``rounds`` times since ``after`` (epoch seconds)."""
    since = after
    for _ in range(rounds):
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        while True:
            targets = prometheus.active_targets()
            up = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
            scraped = [_scraped_at(t) for t in targets]
            if all(up[job] == count for job, count in jobs.items()) and all(
                at > since for at in scraped
            ):
                since = max(scraped)
                break
            if time.monotonic() > deadline:
                summary = [
                    (
                        t["labels"]["job"],
                        t["scrapeUrl"],
                        t["health"],
                        t["lastError"],
                        t["lastScrape"],
                    )
                    for t in targets
                ]
                pytest.fail(
                    f"Prometheus did not scrape {dict(jobs)} after {after}: {summary}\n"
                    f"{diagnostics()}"
                )
            time.sleep(0.2)


# -- the stack ------------------------------------------------------------------------


@dataclass
class PrometheusStack:
    """``keel up`` and the Prometheus that scrapes it, after the traffic."""

    directory: Path
    ports: StackPorts
    settings: KeelSettings
    keel: KeelUp
    prometheus: Prometheus
    traffic: Traffic

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.router}"

    def diagnostics(self) -> str:
        return f"{self.prometheus.log_tail()}\n{self.keel.diagnostics()}"


@pytest.fixture(scope="module")
def stack_overrides() -> dict[str, Any]:
    """Settings merged into the stack's ``keel.yaml``; override it in a test module."""
    return {}


@pytest.fixture(scope="module")
def stack_rules() -> RulesFor | None:
    """The rule file Prometheus loads, from the settings; none unless a module overrides it."""
    return None


@pytest.fixture(scope="module")
def prometheus_stack(
    tmp_path_factory: pytest.TempPathFactory,
    stack_overrides: dict[str, Any],
    stack_rules: RulesFor | None,
) -> Iterator[PrometheusStack]:
    """The running stack after the traffic, scraped twice since; torn down after the module."""
    binary = debian_tool("prometheus", "prometheus")
    directory = tmp_path_factory.mktemp("prometheus-stack")
    ports = StackPorts.free()
    config = merged(stack_config(ports, directory), stack_overrides)
    config_text = yaml.safe_dump(config, sort_keys=False)
    keel = launch_keel_up(directory, config_text, "--no-local-model")
    prometheus: Prometheus | None = None
    try:
        keel.wait_running()
        settings = load_settings(
            config_path=directory / "keel.yaml",
            environ={},
            overrides={"data_dir": str(keel.data_dir)},
        ).settings
        prometheus_dir = directory / "prometheus"
        prometheus_dir.mkdir()
        prometheus_yml = prometheus_dir / "prometheus.yml"
        prometheus_yml.write_text(
            render_prometheus(settings, "local", scrape_interval=SCRAPE_INTERVAL)
        )
        if stack_rules is not None:
            (prometheus_dir / ALERT_RULES_FILE).write_text(stack_rules(settings))
        prometheus = start_prometheus(
            binary, prometheus_yml, port=ports.prometheus, directory=prometheus_dir
        )
        running = prometheus

        def diagnostics() -> str:
            return f"{running.log_tail()}\n{keel.diagnostics()}"

        traffic = drive_traffic(
            router=f"http://127.0.0.1:{ports.router}",
            memory=f"http://127.0.0.1:{ports.memory}",
            data_dir=keel.data_dir,
            diagnostics=diagnostics,
        )
        wait_for_scrapes(
            prometheus,
            after=traffic.finished_at,
            jobs={"agent": 2, "router": 1, "memory": 1, "tools": 1},
            diagnostics=diagnostics,
        )
        yield PrometheusStack(
            directory=directory,
            ports=ports,
            settings=settings,
            keel=keel,
            prometheus=prometheus,
            traffic=traffic,
        )
    finally:
        if prometheus is not None:
            stop_prometheus(prometheus)
        stop_keel_up(keel)
