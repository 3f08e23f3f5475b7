"""Signers and verifiers built from the ``identity`` settings and the secrets source."""

from __future__ import annotations

from agentkeel.config.identity import IdentitySettings
from agentkeel.identity.assertion import CallerSigner, CallerVerifier, WallClock
from agentkeel.identity.keys import identity_public_key, identity_signing_key
from agentkeel.secrets.resolver import SecretResolver


def build_caller_signer(
    settings: IdentitySettings, *, secrets: SecretResolver, time: WallClock | None = None
) -> CallerSigner | None:
    """A signer over ``identity.signing_key_file`` (or the secrets directory's
    ``identity.signing_key_secret``); ``None`` when no key is there."""
    key = identity_signing_key(settings, secrets)
    if key is None:
        return None
    return CallerSigner(key=key, issuer=settings.issuer, ttl_s=settings.ttl_s, time=time)


def build_caller_verifier(
    settings: IdentitySettings,
    *,
    audience: str,
    secrets: SecretResolver,
    time: WallClock | None = None,
) -> CallerVerifier | None:
    """A verifier for ``audience`` over ``identity.public_key_file`` (or the secrets
    directory's ``identity.public_key_secret``); ``None`` when no key is there."""
    key = identity_public_key(settings, secrets)
    if key is None:
        return None
    return CallerVerifier(
        key=key,
        issuer=settings.issuer,
        audience=audience,
        leeway_s=settings.leeway_s,
        time=time,
    )
