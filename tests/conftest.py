"""Shared fixtures: a clean environment for every test, and service probes.

Tests that need PostgreSQL, Redis or the local model skip with a reason when it
is absent (``missing_service``); ``KEEL_TEST_REQUIRE_SERVICES=1`` turns those
skips into failures, which is how CI (``.ci/run``) runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import urlsplit

import psycopg
import pytest


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the test, never from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("KEEL_") or key in {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}:
            monkeypatch.delenv(key, raising=False)
    yield


@pytest.fixture(autouse=True)
def no_audit_file_left() -> Iterator[None]:
    """A command run in-process installs the audit file handler for its data directory;
    it must not outlive the test (and write into the next test's audit calls)."""
    yield
    from agentkeel.telemetry.audit_file import remove_audit_file

    remove_audit_file()


REQUIRE_SERVICES_ENV = "KEEL_TEST_REQUIRE_SERVICES"
# Read once at import, before clean_environ removes every KEEL_* variable from the tests.
REQUIRE_SERVICES = os.environ.get(REQUIRE_SERVICES_ENV, "").strip().lower() in {"1", "true", "yes"}


def missing_service(reason: str) -> NoReturn:
    """Skip a test whose service (PostgreSQL, Redis, the local model) is absent, with the
    reason; with ``KEEL_TEST_REQUIRE_SERVICES=1`` (CI sets it) fail instead, so a
    machine without the service cannot pass with those tests unrun."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1: every service is required)")
    pytest.skip(reason)


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def address_of(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a service URL points at."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def debian_tool(name: str, package: str) -> str:
    """The path of a program from a Debian package that ``make test`` installs
    (``scripts/test-packages.sh``), or a skip (a failure in CI) naming the package."""
    path = shutil.which(name)
    if path is None:
        missing_service(
            f"{name} is not installed (Debian package {package}; make test installs it)"
        )
    return path


@pytest.fixture
def promtool() -> str:
    return debian_tool("promtool", "prometheus")


@pytest.fixture
def prometheus_bin() -> str:
    return debian_tool("prometheus", "prometheus")


@pytest.fixture
def amtool() -> str:
    return debian_tool("amtool", "prometheus-alertmanager")


@pytest.fixture
def postgres_url() -> str:
    host, port = address_of(POSTGRES_URL, 5432)
    if not reachable(host, port):
        missing_service(f"PostgreSQL is not reachable at {host}:{port}")
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    host, port = address_of(REDIS_URL, 6379)
    if not reachable(host, port):
        missing_service(f"Redis is not reachable at {host}:{port}")
    return REDIS_URL


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose search_path is a schema created for this test and dropped after it."""
    schema = f"keel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
