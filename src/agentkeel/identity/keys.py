"""Ed25519 key pairs for caller assertions: made once, read through the ``SecretResolver``.

The private key stays with whoever signs (agent replicas); services that only
verify (the tool server) hold the public key, so a compromised verifier
cannot mint identities. Keys are PEM files; their content never appears in an
error or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentkeel.config.identity import IdentitySettings
from agentkeel.errors import SecretError
from agentkeel.secrets.resolver import SecretResolver


@dataclass(frozen=True, slots=True)
class KeyPairPem:
    """A new Ed25519 key pair as PEM text: PKCS#8 private key, SubjectPublicKeyInfo public key."""

    private_pem: str
    public_pem: str


def generate_key_pair() -> KeyPairPem:
    """A fresh Ed25519 key pair for signing caller assertions."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return KeyPairPem(private_pem=private_pem, public_pem=public_pem)


def public_pem_of(private_pem: str, *, source: Path) -> str:
    """The public half (PEM) of an Ed25519 private key in PEM form, read from ``source``."""
    try:
        key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SecretError(
            f"The caller signing key '{source}' is not a PEM private key without a password. "
            "Delete it (and its .pub) to have a new pair made."
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SecretError(f"The caller signing key '{source}' is not an Ed25519 key.")
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def load_signing_key(
    resolver: SecretResolver, *, name: str, file: Path | None, setting: str
) -> Ed25519PrivateKey | None:
    """The Ed25519 private key in ``file`` or ``secrets_dir/<name>``; ``None`` when neither
    exists. ``setting`` (e.g. ``identity.signing_key_file``) is named in errors."""
    text, where = _read(resolver, name=name, file=file)
    if text is None:
        return None
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SecretError(
            f"The caller signing key {where} is not a PEM private key without a password. "
            f"Point {setting} at the private half made by `keel up`, or at a key made with "
            "`openssl genpkey -algorithm ed25519`."
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SecretError(
            f"The caller signing key {where} is a {type(key).__name__}; caller assertions are "
            f"signed with Ed25519 only. Point {setting} at an Ed25519 private key."
        )
    return key


def load_public_key(
    resolver: SecretResolver, *, name: str, file: Path | None, setting: str
) -> Ed25519PublicKey | None:
    """The Ed25519 public key in ``file`` or ``secrets_dir/<name>``; ``None`` when neither
    exists. ``setting`` (e.g. ``identity.public_key_file``) is named in errors."""
    text, where = _read(resolver, name=name, file=file)
    if text is None:
        return None
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SecretError(
            f"The caller public key {where} is not a PEM public key. Point {setting} at the "
            "public half of the replicas' signing key."
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SecretError(
            f"The caller public key {where} is a {type(key).__name__}; caller assertions are "
            f"verified with Ed25519 only. Point {setting} at an Ed25519 public key."
        )
    return key


def identity_signing_key(
    identity: IdentitySettings, secrets: SecretResolver
) -> Ed25519PrivateKey | None:
    """The ``identity`` section's private key (``signing_key_file`` or its secret)."""
    return load_signing_key(
        secrets,
        name=identity.signing_key_secret,
        file=identity.signing_key_file,
        setting="identity.signing_key_file",
    )


def identity_public_key(
    identity: IdentitySettings, secrets: SecretResolver
) -> Ed25519PublicKey | None:
    """The ``identity`` section's public key (``public_key_file`` or its secret)."""
    return load_public_key(
        secrets,
        name=identity.public_key_secret,
        file=identity.public_key_file,
        setting="identity.public_key_file",
    )


def _read(resolver: SecretResolver, *, name: str, file: Path | None) -> tuple[str | None, str]:
    path = resolver.locate(name, file=file)
    where = f"'{path}'" if path is not None else f"'{name}'"
    if file is None and (path is None or not path.is_file()):
        return None, where
    secret = resolver.resolve(name, file=file)
    assert secret is not None
    return secret.get_secret_value(), where
