from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from agentkeel.errors import SecretError
from agentkeel.secrets import KnownSecrets, SecretVersion, WritableSecretSource
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.paths import format_path, quote_segment


def version(value: str, generation: int, *, activated: float | None) -> SecretVersion:
    return SecretVersion(
        value=SecretStr(value),
        generation=generation,
        created_at=100.0 * generation,
        activated_at=activated,
    )


def test_a_plain_file_is_one_active_version_at_its_mtime(tmp_path: Path) -> None:
    """Today's layout works unchanged: a plain file is generation 1, active since its mtime."""
    (tmp_path / "openai_api_key").write_text("sk-plain-0123456789\n")
    os.utime(tmp_path / "openai_api_key", (1000.0, 1000.0))
    known = KnownSecrets()
    secret = FileSecretSource(root=tmp_path, known=known).read("openai_api_key")
    assert secret is not None
    assert secret.current.value.get_secret_value() == "sk-plain-0123456789"
    assert secret.generations == (1,)
    assert secret.current.created_at == secret.current.activated_at == 1000.0
    assert "sk-plain-0123456789" in known.values()


def test_missing_secret_reads_as_none(tmp_path: Path) -> None:
    """An absent path is None (the cache and ``require`` turn it into an error)."""
    assert FileSecretSource(root=tmp_path).read("orgs/acme/openai") is None


def test_two_versions_keep_the_current_value_in_the_plain_file(tmp_path: Path) -> None:
    """During a rotation the plain file holds the current value, the sidecar the other
    one and the metadata; files are 0600."""
    source = FileSecretSource(root=tmp_path)
    assert isinstance(source, WritableSecretSource)
    source.write(
        "orgs/acme/openai",
        [
            version("sk-new-0123456789", 2, activated=None),
            version("sk-old-0123456789", 1, activated=50.0),
        ],
    )
    plain = tmp_path / "orgs/acme/openai"
    assert plain.read_text().strip() == "sk-old-0123456789"
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    secret = source.read("orgs/acme/openai")
    assert secret is not None
    assert secret.generations == (2, 1)
    assert secret.current.generation == 1
    assert secret.versions[0].activated_at is None
    assert secret.accepts("sk-new-0123456789") is secret.versions[0]
    # Activating the new one moves it into the plain file.
    source.write(
        "orgs/acme/openai",
        [
            version("sk-new-0123456789", 2, activated=200.0),
            version("sk-old-0123456789", 1, activated=50.0),
        ],
    )
    assert plain.read_text().strip() == "sk-new-0123456789"
    secret = source.read("orgs/acme/openai")
    assert secret is not None and secret.current.generation == 2
    assert secret.for_start(100.0).generation == 1
    assert source.paths() == ["orgs/acme/openai"]


def test_a_plain_file_replaced_by_hand_wins_over_the_sidecar(tmp_path: Path) -> None:
    """When someone overwrites the plain file, its value is the only, next, generation."""
    source = FileSecretSource(root=tmp_path)
    source.write("k", [version("sk-gen2-0123456789", 2, activated=1.0)])
    (tmp_path / "k").write_text("sk-by-hand-0123456789")
    secret = source.read("k")
    assert secret is not None
    assert secret.generations == (3,)
    assert secret.current.value.get_secret_value() == "sk-by-hand-0123456789"


def test_delete_removes_the_file_and_its_versions(tmp_path: Path) -> None:
    """delete leaves nothing behind and is a no-op on an absent path."""
    source = FileSecretSource(root=tmp_path)
    source.write("a/b", [version("v1-0123456789", 1, activated=1.0)])
    source.delete("a/b")
    source.delete("a/b")
    assert source.read("a/b") is None
    assert list((tmp_path / "a").iterdir()) == []


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a//b", "a/./b", "a/.hidden", "a\\b", ""])
def test_unsafe_paths_are_refused(tmp_path: Path, bad: str) -> None:
    """No path reaches outside the root or onto a sidecar."""
    with pytest.raises(SecretError):
        FileSecretSource(root=tmp_path).read(bad)


def test_user_ids_are_quoted_into_safe_segments(tmp_path: Path) -> None:
    """A user id with slashes or dots becomes one harmless segment."""
    assert quote_segment("ana@example.com") == "ana@example.com"
    path = format_path("byok/{user}/{provider}", user="../../etc", provider="openai")
    assert path.split("/")[1].startswith("%2E%2E")
    FileSecretSource(root=tmp_path).write(path, [version("v1-0123456789", 1, activated=1.0)])
    assert FileSecretSource(root=tmp_path).read(path) is not None
    assert all(p.is_relative_to(tmp_path) for p in tmp_path.rglob("*"))


def test_empty_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """An empty secret file is a SecretError that says which file."""
    (tmp_path / "k").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        FileSecretSource(root=tmp_path).read("k")
