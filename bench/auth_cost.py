"""What the front door costs one request, in this process (no network).

Times, per call, the pieces the router runs before it forwards a request:

- ``FrontDoor.authenticate_now`` with an API key (a digest and a dict lookup);
- ``FrontDoor.authenticate_now`` with an OIDC token whose key is cached
  (one RS256 signature check per token; the same token again is a lookup);
- ``FrontDoorSigner.sign`` (cached per principal) and a fresh signature;
- ``FrontDoorVerifier.verify`` (cached per token) and a fresh verification;
- ``CallerLimits.check_request_now`` plus ``start_turn_now``/``release``.

Prints the median and p99 of each in microseconds. Never asserts timing.

    python -m bench.auth_cost
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import RSAAlgorithm

from agentkeel.config.auth import AuthLimitSettings, AuthSettings
from agentkeel.identity import (
    ApiKeyStore,
    CallerLimits,
    FrontDoor,
    FrontDoorSigner,
    FrontDoorVerifier,
)
from agentkeel.secrets.resolver import SecretResolver
from bench._common import Figure, median, parse_bench_args, percentile, print_figures

CALLS = 5_000


def timed(name: str, call: Callable[[], object], *, calls: int = CALLS) -> list[Figure]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return [
        Figure(f"{name} p50", median(samples), "µs"),
        Figure(f"{name} p99", percentile(samples, 99), "µs"),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks = data / "jwks.json"
        public = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
        jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
        settings = AuthSettings.model_validate(
            {
                "enabled": True,
                "oidc": {"issuer": "https://id.test/", "audience": "a", "jwks_file": str(jwks)},
            }
        )
        door = FrontDoor(settings, secrets=SecretResolver(), data_dir=data)
        made = ApiKeyStore(door.api_keys_path).create(
            name="bench", organization="acme", user="ana", scopes=["chat"]
        )
        key_header = f"Bearer {made.key}"
        token = jwt.encode(
            {"iss": "https://id.test/", "aud": "a", "sub": "ana", "exp": int(time.time()) + 3600},
            rsa_key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        figures += timed("api key authenticate_now", lambda: door.authenticate_now(key_header))
        figures += timed(
            "oidc RS256 authenticate_now",
            lambda: door.authenticate_now(f"Bearer {token}"),
            calls=1_000,
        )
        principal = door.authenticate_now(key_header)
        assert principal is not None
        signing = Ed25519PrivateKey.generate()
        signer = FrontDoorSigner(key=signing, issuer="agentkeel", audience="agentkeel-agent")
        verifier = FrontDoorVerifier(
            key=signing.public_key(), issuer="agentkeel", audience="agentkeel-agent"
        )
        assertion = signer.sign(principal)
        figures += timed("assertion sign (cached)", lambda: signer.sign(principal))
        figures += timed("assertion verify (cached)", lambda: verifier.verify(assertion))

        def fresh_sign() -> object:
            return FrontDoorSigner(
                key=signing, issuer="agentkeel", audience="agentkeel-agent"
            ).sign(principal)

        def fresh_verify() -> object:
            return FrontDoorVerifier(
                key=signing.public_key(), issuer="agentkeel", audience="agentkeel-agent"
            ).verify(assertion)

        figures += timed("assertion sign (new)", fresh_sign, calls=1_000)
        figures += timed("assertion verify (new)", fresh_verify, calls=1_000)
        limits = CallerLimits(
            AuthLimitSettings(requests_per_minute_per_key=10**9, requests_per_minute_per_user=10**9)
        )

        def limited() -> None:
            limits.check_request_now(principal)
            limits.start_turn_now(principal).release()

        figures += timed("limits request + turn slot", limited)
    return figures


def main() -> None:
    parse_bench_args("bench.auth_cost", __doc__)
    print_figures("Front door, per call", run())


if __name__ == "__main__":
    main()
