"""Caller keys: made as PEM, read through the SecretResolver, refused when not Ed25519."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeel.config.identity import IdentitySettings
from agentkeel.errors import SecretError
from agentkeel.identity import (
    build_caller_signer,
    build_caller_verifier,
    generate_key_pair,
    load_public_key,
    load_signing_key,
)
from agentkeel.secrets.resolver import SecretResolver


def test_a_generated_pair_signs_and_verifies_from_the_secrets_dir(tmp_path: Path) -> None:
    """Both halves in the secrets directory under their default names build a signer and
    a verifier that agree."""
    pair = generate_key_pair()
    (tmp_path / "caller_signing_key").write_text(pair.private_pem)
    (tmp_path / "caller_public_key").write_text(pair.public_pem)
    secrets = SecretResolver(secrets_dir=tmp_path)
    signer = build_caller_signer(IdentitySettings(), secrets=secrets)
    verifier = build_caller_verifier(IdentitySettings(), audience="tools", secrets=secrets)
    assert signer is not None and verifier is not None
    token = signer.sign(
        audience="tools", tool="t", agent_id="a", user_id="u", session_id="s", turn=0
    )
    assert verifier.verify(token, tool="t").user_id == "u"


def test_no_key_anywhere_builds_nothing(tmp_path: Path) -> None:
    """Without a file and with nothing in the secrets directory there is no signer or
    verifier (the caller decides whether that is an error)."""
    secrets = SecretResolver(secrets_dir=tmp_path)
    assert build_caller_signer(IdentitySettings(), secrets=secrets) is None
    assert build_caller_verifier(IdentitySettings(), audience="x", secrets=secrets) is None


def test_a_named_file_that_is_missing_or_not_ed25519_is_a_secret_error(tmp_path: Path) -> None:
    """An explicit key file that does not exist, is not PEM, or holds an EC key is a
    SecretError naming the file and the setting, never the key."""
    secrets = SecretResolver()
    with pytest.raises(SecretError, match="does not exist"):
        load_signing_key(secrets, name="k", file=tmp_path / "nope", setting="identity.x")
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key at all")
    with pytest.raises(SecretError, match=r"garbage.*identity\.signing_key_file"):
        load_signing_key(secrets, name="k", file=garbage, setting="identity.signing_key_file")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_file = tmp_path / "ec.pem"
    ec_pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    ec_file.write_text(ec_pem)
    with pytest.raises(SecretError, match="Ed25519 only") as refused:
        load_signing_key(secrets, name="k", file=ec_file, setting="identity.signing_key_file")
    assert ec_pem.splitlines()[1] not in refused.value.message
    ec_public = tmp_path / "ec.pub"
    ec_public.write_text(
        ec_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(SecretError, match="Ed25519 only"):
        load_public_key(secrets, name="k", file=ec_public, setting="identity.public_key_file")
