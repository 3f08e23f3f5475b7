"""The shared bearer-token helpers: the header, admin tokens and tokens files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from agentkeel.errors import ConfigError, Forbidden, Unauthorized
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.web.auth import (
    AdminToken,
    TokensFile,
    bearer_token,
    env_name,
    parse_token_grants,
    token_digest,
)

ADMIN = "admin-token-" + "a" * 20


def admin_for(tmp_path: Path, *, file: Path | None = None) -> AdminToken:
    return AdminToken(
        resolver=SecretResolver(secrets_dir=tmp_path),
        name="admin_token",
        file=file,
        setting="server.admin_token_file",
        service="agent server",
    )


def test_bearer_token_reads_only_the_bearer_scheme() -> None:
    """The token of 'Bearer <t>' (any case, trimmed); None for other schemes or nothing."""
    assert bearer_token("Bearer abc ") == "abc"
    assert bearer_token("bearer abc") == "abc"
    for header in (None, "", "Bearer", "Bearer   ", "Basic abc", "abc"):
        assert bearer_token(header) is None


def test_admin_disabled_names_where_the_token_goes(tmp_path: Path) -> None:
    """With no token file, any request is 403 admin_disabled naming the file, the setting
    and its environment variable."""
    with pytest.raises(Forbidden) as refused:
        admin_for(tmp_path).check(f"Bearer {ADMIN}")
    assert refused.value.code == "admin_disabled"
    message = refused.value.message
    assert str(tmp_path / "admin_token") in message
    assert "server.admin_token_file" in message and env_name("server.admin_token_file") in message


def test_admin_token_is_401_without_403_wrong_and_passes_right(tmp_path: Path) -> None:
    """No bearer token is 401 naming the header; a wrong one 403; the right one passes.
    Neither message repeats the token."""
    (tmp_path / "admin_token").write_text(ADMIN + "\n")
    admin = admin_for(tmp_path)
    with pytest.raises(Unauthorized, match="'Authorization: Bearer <admin token>'"):
        admin.check(None)
    with pytest.raises(Forbidden) as wrong:
        admin.check("Bearer " + ADMIN[:-1] + "b")
    assert wrong.value.code == "forbidden"
    assert ADMIN not in wrong.value.message
    admin.check(f"Bearer {ADMIN}")
    assert admin.matches(ADMIN) and not admin.matches("x")


def test_a_rotated_admin_token_applies_without_restart(tmp_path: Path) -> None:
    """Replacing the file's content switches the accepted token on the next check."""
    path = tmp_path / "admin_token"
    path.write_text(ADMIN)
    admin = admin_for(tmp_path)
    admin.check(f"Bearer {ADMIN}")
    rotated = "rotated-token-" + "r" * 20
    path.write_text(rotated)
    os.utime(path, ns=(1, 1))
    with pytest.raises(Forbidden):
        admin.check(f"Bearer {ADMIN}")
    admin.check(f"Bearer {rotated}")


def test_an_empty_admin_file_disables_admin_saying_why(tmp_path: Path) -> None:
    """An admin token file that exists but is empty is admin_disabled with the reason."""
    path = tmp_path / "custom"
    path.write_text("\n")
    with pytest.raises(Forbidden, match="is empty") as refused:
        admin_for(tmp_path, file=path).check(f"Bearer {ADMIN}")
    assert refused.value.code == "admin_disabled"
    assert not admin_for(tmp_path, file=path).matches(ADMIN)


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    tools: list[str] = []


def test_tokens_file_is_looked_up_by_digest_and_reread_on_change(tmp_path: Path) -> None:
    """Entries are keyed by the token's SHA-256; a changed file is parsed again, and a
    missing one has no entries."""
    path = tmp_path / "tokens.yaml"
    first, second = "first-token-" + "f" * 20, "second-token-" + "s" * 20
    path.write_text(f"tokens:\n  {first}: {{name: one, tools: ['*']}}\n")

    def parse(text: str, source: str) -> dict[str, Grant]:
        return parse_token_grants(text, source=source, what="test file", grant=Grant, shape="{}")

    tokens = TokensFile(resolver=SecretResolver(), name=None, file=path, parse=parse)
    found = tokens.lookup(first)
    assert found is not None and found.name == "one"
    assert set(tokens.entries()) == {token_digest(first)}
    path.write_text(f"{second}: {{name: two}}\n")
    assert tokens.lookup(first) is None
    found = tokens.lookup(second)
    assert found is not None and found.name == "two"
    path.unlink()
    assert tokens.entries() == {}


def test_a_broken_tokens_file_never_shows_a_token_and_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The YAML error names the line and the problem but quotes none of the file (its
    lines are tokens); a bad edit while serving keeps the entries parsed before, with
    an error logged; a file that never parsed is an error."""
    path = tmp_path / "tokens.yaml"
    good, other = "good-token-" + "g" * 20, "other-token-" + "o" * 20
    broken = f"tokens:\n  {good}: {{name: one}}\n  {other}: [unclosed\n"

    def parse(text: str, source: str) -> dict[str, Grant]:
        return parse_token_grants(text, source=source, what="test file", grant=Grant, shape="{}")

    with pytest.raises(ConfigError) as raised:
        parse(broken, str(path))
    assert "line " in raised.value.message
    assert good not in raised.value.message and other not in raised.value.message

    path.write_text(broken)
    with pytest.raises(ConfigError):
        TokensFile(resolver=SecretResolver(), name=None, file=path, parse=parse).entries()

    path.write_text(f"tokens:\n  {good}: {{name: one}}\n")
    tokens = TokensFile(resolver=SecretResolver(), name=None, file=path, parse=parse)
    assert tokens.lookup(good) is not None
    path.write_text(broken + "# edited\n")
    with caplog.at_level("ERROR", logger="agentkeel.web.auth"):
        assert tokens.lookup(good) is not None
    assert "still using the tokens" in caplog.text
    assert good not in caplog.text and other not in caplog.text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: [b", "not valid YAML"),
        ("[1, 2]", "must map each token"),
        ("short: {}", "shorter than 16"),
        ("{" + '"' + "t" * 20 + '": {"name": "n", "tool": 1}}', "grant of token 'n' is invalid"),
    ],
)
def test_bad_tokens_files_name_the_problem(text: str, reason: str) -> None:
    """Bad YAML, a wrong shape, a short token or a bad grant is a ConfigError saying so."""
    with pytest.raises(ConfigError, match=reason):
        parse_token_grants(
            text, source="tokens.yaml", what="test file", grant=Grant, shape="{tools: [...]}"
        )
