"""The ``http_get`` tool: fetch a URL from an allowlist of hosts, with size and time caps.

Off by default. Each host, including every redirect target, must be on the
allowlist, and every address it resolves to must be public unless
``allow_private`` is set: a model must not be able to reach the metadata
service (169.254.169.254), localhost or the private network through it.

The address check runs on the DNS answer before connecting; a host whose DNS
changes between the check and the connection (rebinding) is not caught, which
is why the allowlist of hosts, not the address check, is the main control.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from agentkeel.config.tools import HttpGetSettings

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``; the default asks the system resolver."""


class HttpGetRefused(ValueError):
    """A URL the tool will not fetch; the message says why and what is allowed."""


async def resolve_host(host: str, port: int) -> Sequence[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HttpGetRefused(f"cannot resolve host '{host}': {exc.strerror}") from exc
    return sorted({str(info[4][0]) for info in infos})


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` matches an entry: exact, or ``*.example.com`` for subdomains."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def is_public_address(address: str) -> bool:
    """False for private, loopback, link-local, multicast, reserved and unspecified
    addresses (and IPv4 addresses mapped into IPv6 that are any of those)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def make_http_get(
    settings: HttpGetSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> Callable[..., Awaitable[str]]:
    """Build the ``http_get`` tool for ``settings``.

    ``transport`` and ``resolver`` are for tests (an ``httpx.MockTransport`` and
    a fixed DNS answer).
    """
    resolve = resolver or resolve_host

    async def check(url: str) -> httpx.URL:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise HttpGetRefused(f"only http and https URLs can be fetched, not '{parts.scheme}:'")
        host = parts.hostname or ""
        if not host:
            raise HttpGetRefused(f"'{url}' has no host")
        if not host_allowed(host, settings.allowed_hosts):
            listed = ", ".join(settings.allowed_hosts) or "none"
            raise HttpGetRefused(
                f"host '{host}' is not on the allowlist (allowed: {listed}); an operator adds "
                "hosts to tools.server.http_get.allowed_hosts"
            )
        if not settings.allow_private:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            for address in await resolve(host, port):
                if not is_public_address(address):
                    raise HttpGetRefused(
                        f"host '{host}' resolves to {address}, a private, loopback or link-local "
                        "address; those are refused unless tools.server.http_get.allow_private "
                        "is set"
                    )
        return httpx.URL(url)

    async def http_get(url: str) -> str:
        """Fetch a web page or API response with HTTP GET and return its status and text.

        Only hosts on the operator's allowlist can be fetched; long bodies are cut.

        Args:
            url: The full URL to fetch, e.g. "https://api.example.com/v1/status".
        """
        if not settings.enabled:
            raise HttpGetRefused(
                "http_get is disabled on this tool server; an operator enables it with "
                "tools.server.http_get.enabled and allowed_hosts"
            )
        client_args: dict[str, Any] = {"timeout": settings.timeout_s, "follow_redirects": False}
        if transport is not None:
            client_args["transport"] = transport
        try:
            async with asyncio.timeout(settings.timeout_s), httpx.AsyncClient(**client_args) as c:
                target = await check(url)
                for _ in range(settings.max_redirects + 1):
                    body, response = await _read_capped(c, target, settings.max_bytes)
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        target = await check(urljoin(str(target), location))
                        continue
                    return _render(response, body, settings.max_bytes)
                raise HttpGetRefused(f"more than {settings.max_redirects} redirects from '{url}'")
        except TimeoutError as exc:
            raise HttpGetRefused(
                f"'{url}' did not answer within {settings.timeout_s:g}s; try again later"
            ) from exc
        except httpx.HTTPError as exc:
            raise HttpGetRefused(f"fetching '{url}' failed: {exc}") from exc

    return http_get


async def _read_capped(
    client: httpx.AsyncClient, url: httpx.URL, max_bytes: int
) -> tuple[bytes, httpx.Response]:
    chunks: list[bytes] = []
    size = 0
    async with client.stream("GET", url) as response:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                break
    return b"".join(chunks), response


def _render(response: httpx.Response, body: bytes, max_bytes: int) -> str:
    cut = len(body) > max_bytes
    text = body[:max_bytes].decode(response.encoding or "utf-8", errors="replace")
    content_type = response.headers.get("content-type", "unknown")
    marker = f"\n[truncated: only the first {max_bytes} bytes are shown]" if cut else ""
    return f"HTTP {response.status_code} ({content_type})\n{text}{marker}"
