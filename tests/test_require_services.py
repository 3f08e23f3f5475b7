"""KEEL_TEST_REQUIRE_SERVICES turns "service absent" skips into failures (CI sets it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_drain import free_port

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
from tests.conftest import clean_environ, postgres_url, redis_url  # noqa: F401


def test_needs_postgres(postgres_url):
    """Uses the real fixture."""


def test_needs_redis(redis_url):
    """Uses the real fixture."""
'''


QUIET = ("-o", "asyncio_default_fixture_loop_scope=function")


def run_probe(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """A tiny test file using the suite's own PostgreSQL and Redis fixtures, pointed at
    ports where nothing listens."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        "KEEL_TEST_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        "KEEL_TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        **extra,
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *QUIET, str(probe)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )


@pytest.mark.slow
def test_absent_services_skip_with_their_reason_by_default(tmp_path: Path) -> None:
    """Without the switch, a test whose PostgreSQL or Redis is unreachable skips and says
    where it looked."""
    result = run_probe(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert "PostgreSQL is not reachable at 127.0.0.1:" in result.stdout
    assert "Redis is not reachable at 127.0.0.1:" in result.stdout


@pytest.mark.slow
def test_the_switch_turns_those_skips_into_failures(tmp_path: Path) -> None:
    """With KEEL_TEST_REQUIRE_SERVICES=1 the same tests fail, with the same reason and the
    switch named."""
    result = run_probe(tmp_path, KEEL_TEST_REQUIRE_SERVICES="1")
    assert result.returncode == 1, result.stdout + result.stderr
    # A fixture that fails makes its test an error: the run fails either way.
    assert "2 errors" in result.stdout
    assert "PostgreSQL is not reachable" in result.stdout
    assert "KEEL_TEST_REQUIRE_SERVICES=1" in result.stdout


def test_ci_requires_the_services() -> None:
    """CI's entry point sets the switch before running the tests."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "KEEL_TEST_REQUIRE_SERVICES=1" in script
    assert script.index("KEEL_TEST_REQUIRE_SERVICES=1") < script.index("make test")
