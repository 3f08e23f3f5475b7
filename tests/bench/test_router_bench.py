"""The router benchmark's own pieces: wrk's output read right, the stand-in replica's
answers, and the HAProxy config doing sticky routing for real."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from bench._common import parse_bench_args
from bench._haproxy import Server, haproxy_command, render_config
from bench._replica_standin import StandinReplica
from bench._wrk import parse_output, write_script
from bench.router import (
    CpuPlan,
    Options,
    add_options,
    haproxy_proxy,
    open_sessions,
    options_from,
    standin_backends,
)

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8080
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   371.56us  331.39us   5.59ms   96.57%
  Latency Distribution
     50%  338.00us
     75%  419.00us
     90%  541.00us
     99%    1.87ms
  257662 requests in 5.00s, 28.01MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  51532.40
Transfer/sec:      9.33MB
"""


def test_wrk_output_is_read_in_microseconds_with_errors_counted() -> None:
    """Percentiles in us and ms come back in µs; socket errors and non-2xx add up."""
    result = parse_output(WRK_OUTPUT)
    assert result.p50_us == pytest.approx(338.0)
    assert result.p99_us == pytest.approx(1870.0)
    assert result.requests_per_s == pytest.approx(51532.40)
    assert result.requests == 257662
    assert result.errors == 10
    assert not result.clean


def test_wrk_output_without_latency_distribution_is_refused() -> None:
    """Output of a run without --latency names what is missing instead of guessing."""
    without = "\n".join(line for line in WRK_OUTPUT.splitlines() if "%" not in line)
    with pytest.raises(ValueError, match="latency distribution"):
        parse_output(without)


def test_wrk_script_rotates_over_every_session(tmp_path: Path) -> None:
    """The Lua script names every session once; an empty list is refused."""
    script = write_script(tmp_path / "turns.lua", ["a1", 'b"2'])
    text = script.read_text()
    assert '"a1"' in text and '"b\\"2"' in text
    assert "/messages" in text
    with pytest.raises(ValueError):
        write_script(tmp_path / "none.lua", [])


def test_standin_answers_only_for_its_own_sessions() -> None:
    """A session created on one stand-in takes turns there; another stand-in answers 404."""
    v1, v2 = StandinReplica("v1"), StandinReplica("v2")
    created = v1.answer(b"POST", b"/v1/sessions")
    assert created.startswith(b"HTTP/1.1 201")
    (sid,) = v1.sessions
    turn = f"/v1/sessions/{sid}/messages".encode()
    assert v1.answer(b"POST", turn).startswith(b"HTTP/1.1 200")
    assert v2.answer(b"POST", turn).startswith(b"HTTP/1.1 404")
    assert b'"version": "v1"' in v1.answer(b"GET", f"/v1/sessions/{sid}".encode())
    assert v1.answer(b"DELETE", f"/v1/sessions/{sid}".encode()).startswith(b"HTTP/1.1 200")
    assert v1.answer(b"POST", turn).startswith(b"HTTP/1.1 404")
    assert v1.answer(b"GET", b"/ready").startswith(b"HTTP/1.1 200")
    assert v1.answer(b"GET", b"/v2/elsewhere").startswith(b"HTTP/1.1 404")


def test_haproxy_config_needs_a_server() -> None:
    with pytest.raises(ValueError):
        render_config(port=1, servers=[])


def _require_haproxy() -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make bench-deps)")


def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    """HAProxy itself accepts the rendered config."""
    _require_haproxy()
    config = tmp_path / "haproxy.cfg"
    servers = [Server("v1", "http://127.0.0.1:1", 50), Server("v2", "http://127.0.0.1:2", 50)]
    config.write_text(render_config(port=3, servers=servers))
    checked = subprocess.run(
        [*haproxy_command(config), "-c"], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_haproxy_keeps_every_session_on_the_backend_that_created_it(tmp_path: Path) -> None:
    """Sessions opened through HAProxy spread over both stand-ins, and every turn of
    each reaches the one that created it (a wrong backend would answer 404)."""
    _require_haproxy()
    cpus = CpuPlan()
    with standin_backends(2, cpus, tmp_path) as backends:
        proxy_dir = tmp_path / "haproxy"
        proxy_dir.mkdir()
        with haproxy_proxy(backends, cpus, proxy_dir) as proxy:
            target = open_sessions("haproxy", proxy.url, 20, proxy.pid)
            with httpx.Client(base_url=proxy.url, trust_env=False) as client:
                statuses = {
                    client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"}).status_code
                    for sid in target.session_ids * 3
                }
    assert target.by_version == {"v1": 10, "v2": 10}
    assert len(set(target.session_ids)) == 20
    assert statuses == {200}


def _parse(*argv: str) -> Options:
    return options_from(parse_bench_args("bench.router", None, list(argv), options=add_options))


def test_options_always_measure_direct_and_refuse_bad_values() -> None:
    """The added latency needs the direct path, so it is added; unknown paths, bad
    connection lists and zero runs are refused with a message naming the option."""
    assert _parse("--paths", "haproxy").paths == ("direct", "haproxy")
    assert _parse("--connections", "1,8").connections == (1, 8)
    assert _parse().pin is False
    with pytest.raises(SystemExit, match="--paths"):
        _parse("--paths", "nginx")
    with pytest.raises(SystemExit, match="--connections"):
        _parse("--connections", "one")
    with pytest.raises(SystemExit, match="--runs"):
        _parse("--runs", "0")
