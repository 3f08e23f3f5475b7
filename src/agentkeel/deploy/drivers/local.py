"""``LocalDriver``: the ``ReplicaDriver`` of a stack that ``keel up`` runs on this machine.

It asks ``keel up`` through its control channel: HTTP over the unix socket
``<data_dir>/control.sock`` (``stack.json`` names it; ``cli/stack.py``
``LocalStack.control_socket`` finds it). ``keel up`` starts a replica with the
same command as its own, waits for its ``/ready`` and answers; stopping one
drains it (SIGTERM: turns in flight finish). The driver does not touch the
router: registering a replica there is the rollout controller's job.

Every failure is a ``KeelError`` that names the socket: ``Unavailable`` when
no ``keel up`` answers on it, and the control channel's own error (422 bad
spec, 404 unknown replica, 503 a replica that never got ready, naming its log)
otherwise.

>>> driver = LocalDriver(Path(".keel/control.sock"))
>>> [v2] = await driver.start_replicas(ReplicaSpec(version="v2"), 1)
>>> await driver.stop_replica(v2.name, drain=True)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_type_hints

import httpx

from agentkeel.deploy.types import ReplicaInfo, ReplicaSpec
from agentkeel.errors import KeelError, Unavailable
from agentkeel.telemetry.http import make_async_client
from agentkeel.web.peer_errors import error_from_response

__all__ = ["LocalDriver"]

# Starting replicas waits for their /ready and stopping one waits for its drain.
DEFAULT_TIMEOUT_S = 600.0
_STATES = frozenset(get_args(get_type_hints(ReplicaInfo)["state"]))


class LocalDriver:
    """Starts, lists and stops replicas of the local ``keel up`` through its control socket."""

    def __init__(
        self,
        control_socket: Path,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.control_socket = control_socket
        self.timeout_s = timeout_s
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> LocalDriver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        """Start ``count`` replicas of ``spec`` and return once each answers ``/ready``.

        A relative ``spec.config`` is made absolute here, where the caller
        runs (``keel up`` may run in another directory).
        """
        body: dict[str, Any] = {"version": spec.version, "count": count, "env": dict(spec.env)}
        if spec.entrypoint is not None:
            body["entrypoint"] = spec.entrypoint
        if spec.config is not None:
            body["config"] = _absolute(spec.config)
        data = await self._request("POST", "/replicas", body)
        return self._infos(data)

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        """Drain (SIGTERM: turns in flight finish) and stop one replica; ``drain=False``
        kills it at once. Returns once it has exited."""
        await self._request("POST", f"/replicas/{name}/stop", {"drain": drain})

    async def list_replicas(self) -> list[ReplicaInfo]:
        """Every replica ``keel up`` runs, its own and those started through this driver."""
        return self._infos(await self._request("GET", "/replicas"))

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._client().request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"keel up's control socket {self.control_socket} did not answer {method} {path} "
                f"within {self.timeout_s:g} s; see keel up's output and the replica logs.",
                code="control_unavailable",
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"Cannot reach keel up on its control socket {self.control_socket} "
                f"({type(exc).__name__}: {exc}). Is keel up running with this data directory?",
                code="control_unavailable",
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(
                response, peer=f"keel up (control socket {self.control_socket})"
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._bad_answer(method, path, response.text[:200])
        return data

    def _client(self) -> httpx.AsyncClient:
        # Built on first use, so a driver can be made outside a running event loop.
        if self._http is None:
            transport = self._transport or httpx.AsyncHTTPTransport(uds=str(self.control_socket))
            self._http = make_async_client(
                base_url="http://keel-up",
                transport=transport,
                timeout=httpx.Timeout(self.timeout_s, connect=5.0),
                trust_env=False,
            )
        return self._http

    def _infos(self, data: Mapping[str, Any]) -> list[ReplicaInfo]:
        replicas = data.get("replicas")
        if not isinstance(replicas, list):
            raise self._bad_answer("", "", "no replicas list")
        infos: list[ReplicaInfo] = []
        for item in replicas:
            if not isinstance(item, Mapping) or item.get("state") not in _STATES:
                raise self._bad_answer("", "", f"replica entry {item!r}")
            try:
                infos.append(
                    ReplicaInfo(
                        name=str(item["name"]),
                        version=str(item["version"]),
                        url=str(item["url"]),
                        state=item["state"],
                    )
                )
            except KeyError as exc:
                raise self._bad_answer("", "", f"replica entry without {exc}") from exc
        return infos

    def _bad_answer(self, method: str, path: str, detail: str) -> KeelError:
        what = f" to {method} {path}" if method else ""
        return Unavailable(
            f"keel up's control socket {self.control_socket} gave an answer{what} that is not "
            f"the control API's ({detail}); is something else listening there?",
            code="control_bad_answer",
        )


def _absolute(path: str) -> str:
    return str(Path(path).absolute())
