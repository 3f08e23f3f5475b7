from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.errors import SecretError
from agentkeel.secrets import SecretResolver


def test_explicit_file_wins_and_is_stripped(tmp_path: Path) -> None:
    """A named file is read, surrounding whitespace dropped, and the value hidden in repr."""
    key = tmp_path / "key"
    key.write_text("sk-test-123\n")
    secret = SecretResolver(secrets_dir=None).resolve("openai_api_key", file=key)
    assert secret is not None
    assert secret.get_secret_value() == "sk-test-123"
    assert "sk-test-123" not in repr(secret) and "sk-test-123" not in str(secret)


def test_secrets_dir_lookup_by_name(tmp_path: Path) -> None:
    """Without a file, the secret is looked up by name in the secrets directory."""
    (tmp_path / "admin_token").write_text("t0ken")
    secret = SecretResolver(secrets_dir=tmp_path).resolve("admin_token")
    assert secret is not None and secret.get_secret_value() == "t0ken"


def test_missing_secret_required_and_optional(tmp_path: Path) -> None:
    """A required secret that is absent raises with where to put it; optional gives None."""
    resolver = SecretResolver(secrets_dir=tmp_path)
    with pytest.raises(SecretError, match="admin_token"):
        resolver.resolve("admin_token")
    assert resolver.resolve("admin_token", required=False) is None


def test_empty_and_missing_files_are_errors(tmp_path: Path) -> None:
    """An empty secret file or a wrong path is reported, never used as an empty key."""
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(SecretError, match="empty"):
        SecretResolver().resolve(None, file=empty)
    with pytest.raises(SecretError, match="does not exist"):
        SecretResolver().resolve(None, file=tmp_path / "missing")


def test_locate_names_the_file_resolve_would_read(tmp_path: Path) -> None:
    """locate gives the explicit file, else secrets_dir/<name> (existing or not), else None."""
    resolver = SecretResolver(secrets_dir=tmp_path)
    assert resolver.locate("token", file=tmp_path / "x") == tmp_path / "x"
    assert resolver.locate("token") == tmp_path / "token"
    assert SecretResolver().locate("token") is None
