"""The http_get tool: off by default, allowlisted hosts, no private addresses, caps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import httpx
import pytest

from agentkeel.config.tools import HttpGetSettings
from agentkeel.tools.http_get import HttpGetRefused, is_public_address, make_http_get


def answer(*addresses: str) -> Callable[[str, int], Awaitable[Sequence[str]]]:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


def pages(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/hop":
        return httpx.Response(302, headers={"location": "http://evil.example.net/"})
    return httpx.Response(200, text="y" * 100, headers={"content-type": "text/plain"})


async def test_disabled_by_default() -> None:
    """Without enabled, every fetch is refused with how to turn it on."""
    tool = make_http_get(HttpGetSettings(), resolver=answer("93.184.216.34"))
    with pytest.raises(HttpGetRefused, match="disabled"):
        await tool(url="http://example.com/")


async def test_host_outside_the_allowlist_is_refused() -> None:
    """Only listed hosts (or *.suffix) are fetched, redirect targets included."""
    settings = HttpGetSettings(enabled=True, allowed_hosts=["*.example.com"])
    tool = make_http_get(
        settings, transport=httpx.MockTransport(pages), resolver=answer("93.184.216.34")
    )
    with pytest.raises(HttpGetRefused, match="not on the allowlist"):
        await tool(url="http://example.org/")
    with pytest.raises(HttpGetRefused, match=r"'evil\.example\.net' is not on the allowlist"):
        await tool(url="http://api.example.com/hop")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1"])
async def test_private_addresses_are_refused_after_resolution(address: str) -> None:
    """An allowed host that resolves to a private, loopback or link-local address is
    refused unless allow_private is set."""
    settings = HttpGetSettings(enabled=True, allowed_hosts=["internal.example.com"])
    tool = make_http_get(settings, transport=httpx.MockTransport(pages), resolver=answer(address))
    with pytest.raises(HttpGetRefused, match="private, loopback or link-local"):
        await tool(url="http://internal.example.com/")
    allowed = settings.model_copy(update={"allow_private": True})
    tool = make_http_get(allowed, transport=httpx.MockTransport(pages), resolver=answer(address))
    assert (await tool(url="http://internal.example.com/")).startswith("HTTP 200")


async def test_body_is_capped() -> None:
    """Bodies over max_bytes are cut and marked."""
    settings = HttpGetSettings(enabled=True, allowed_hosts=["example.com"], max_bytes=10)
    tool = make_http_get(
        settings, transport=httpx.MockTransport(pages), resolver=answer("93.184.216.34")
    )
    text = await tool(url="http://example.com/")
    assert text.startswith("HTTP 200 (text/plain)\nyyyyyyyyyy\n[truncated")


def test_public_address_check() -> None:
    """IPv4-mapped IPv6 loopback is not public; a routable address is."""
    assert not is_public_address("::ffff:127.0.0.1")
    assert is_public_address("93.184.216.34")
