"""API keys: made, stored as digests, checked, expired, revoked, written safely."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentkeel.errors import ConfigError, Forbidden, Unauthorized
from agentkeel.identity.apikeys import ApiKeys, ApiKeyStore


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "api_keys.yaml"


def test_a_created_key_authenticates_as_its_principal(path: Path) -> None:
    """The key made by create is accepted and names its credential, org, user and scopes."""
    made = ApiKeyStore(path).create(
        name="ci", organization="acme", user="ana", scopes=["chat", "sessions:read"]
    )
    assert made.key.startswith(f"ak_{made.record.id}_")
    principal = ApiKeys(path).authenticate(made.key)
    assert principal.kind == "api_key"
    assert principal.credential == "api_key:ci"
    assert (principal.user_id, principal.organization) == ("ana", "acme")
    assert principal.scopes == {"chat", "sessions:read"}


def test_the_keys_file_holds_digests_never_keys(path: Path) -> None:
    """The file has the key's SHA-256 and not the key or its secret part; it is 0600."""
    made = ApiKeyStore(path).create(name="ci", organization="acme", scopes=["chat"])
    text = path.read_text()
    assert made.key not in text
    assert made.key.split("_", 2)[2] not in text
    assert made.record.digest in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unknown_key_is_refused_without_echoing_it(path: Path) -> None:
    """A key not in the file (or not a key at all) is 401 key_unknown; the message never
    contains what was sent."""
    ApiKeyStore(path).create(name="ci", organization="acme", scopes=["chat"])
    keys = ApiKeys(path)
    for sent in ("ak_abcdefgh_" + "x" * 43, "not-a-key-at-all-0123456789"):
        with pytest.raises(Unauthorized) as caught:
            keys.authenticate(sent)
        assert caught.value.code == "key_unknown"
        assert sent not in caught.value.message


def test_an_expired_key_is_refused_with_key_expired(path: Path) -> None:
    """After its expiry the key is 401 key_expired, naming the key (not the secret)."""
    clock = Clock()
    expires = datetime.fromtimestamp(clock.now + 3600, tz=UTC)
    made = ApiKeyStore(path, clock=clock).create(
        name="short", organization="acme", scopes=["chat"], expires_at=expires
    )
    keys = ApiKeys(path, clock=clock)
    assert keys.authenticate(made.key).credential == "api_key:short"
    clock.now += 3600
    with pytest.raises(Unauthorized) as caught:
        keys.authenticate(made.key)
    assert caught.value.code == "key_expired"
    assert "short" in caught.value.message and made.key not in caught.value.message


def test_a_revoked_key_is_refused_at_once_without_a_restart(path: Path) -> None:
    """Revoking rewrites the file; the reader that accepted the key refuses it next time."""
    store = ApiKeyStore(path)
    made = store.create(name="ci", organization="acme", scopes=["chat"])
    keys = ApiKeys(path)
    keys.authenticate(made.key)
    store.revoke("ci")
    with pytest.raises(Unauthorized) as caught:
        keys.authenticate(made.key)
    assert caught.value.code == "key_revoked"


def test_a_key_without_a_scope_is_forbidden_that_scope(path: Path) -> None:
    """A chat-only key gets 403 insufficient_scope for admin."""
    made = ApiKeyStore(path).create(name="ci", organization="acme", scopes=["chat"])
    principal = ApiKeys(path).authenticate(made.key)
    principal.require("chat")
    with pytest.raises(Forbidden) as caught:
        principal.require("admin")
    assert caught.value.code == "insufficient_scope"


def test_unknown_scopes_and_duplicate_names_are_refused(path: Path) -> None:
    """create refuses a scope outside SCOPES and a name that exists (naming it)."""
    store = ApiKeyStore(path)
    with pytest.raises(ConfigError, match="scopes"):
        store.create(name="ci", organization="acme", scopes=["root"])
    store.create(name="ci", organization="acme", scopes=["chat"])
    with pytest.raises(ConfigError, match="'ci' exists"):
        store.create(name="ci", organization="acme", scopes=["chat"])
    assert [record.name for record in store.records()] == ["ci"]


def test_concurrent_creates_keep_every_key(path: Path) -> None:
    """Sixteen threads each creating a key (separate stores, as separate processes would)
    leave sixteen keys, each of which authenticates."""
    made: list[str] = []
    errors: list[BaseException] = []

    def create(index: int) -> None:
        try:
            made.append(
                ApiKeyStore(path).create(name=f"k{index}", organization="acme", scopes=["chat"]).key
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(ApiKeyStore(path).records()) == 16
    keys = ApiKeys(path)
    assert {keys.authenticate(key).credential for key in made} == {
        f"api_key:k{i}" for i in range(16)
    }
