"""The loopback stand-in for OpenAI-compatible and Anthropic endpoints, once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.models.fake_endpoints import FakeEndpoints, serve_fake_endpoints


@pytest.fixture(scope="module")
def endpoints() -> Iterator[FakeEndpoints]:
    with serve_fake_endpoints() as running:
        yield running
