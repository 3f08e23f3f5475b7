"""VaultSecretSource over hvac, against the KV v2 stand-in on a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agentkeel.config.secrets import VaultSettings
from agentkeel.errors import ConfigError, SecretError
from agentkeel.secrets import KnownSecrets, SecretVersion, WritableSecretSource, require
from agentkeel.secrets.vault import VaultSecretSource
from agentkeel.testing.vault_kv_standin import VaultKVStandin

ROOT_TOKEN = "hvs.root-0123456789"
JWT = "eyJhbGciOiJSUzI1NiJ9.service-account.sig"


@pytest.fixture
def vault() -> Iterator[VaultKVStandin]:
    standin = VaultKVStandin(tokens={ROOT_TOKEN}, kubernetes_roles={"agentkeel": JWT})
    with standin.serving():
        yield standin


def token_source(
    vault: VaultKVStandin,
    tmp_path: Path,
    token: str = ROOT_TOKEN,
    known: KnownSecrets | None = None,
) -> VaultSecretSource:
    token_file = tmp_path / "vault_token"
    token_file.write_text(token + "\n")
    return VaultSecretSource(
        settings=VaultSettings(url=vault.url, auth="token", token_file=token_file), known=known
    )


def test_a_plain_value_entry_is_one_active_version(vault: VaultKVStandin, tmp_path: Path) -> None:
    """An entry written as `vault kv put secret/agentkeel/orgs/acme/openai value=...` reads
    as generation 1, and its value is known for sanitization."""
    vault.put("secret", "agentkeel/orgs/acme/openai", {"value": "sk-acme-0123456789"})
    known = KnownSecrets()
    source = token_source(vault, tmp_path, known=known)
    assert isinstance(source, WritableSecretSource)
    secret = source.read("orgs/acme/openai")
    assert secret is not None
    assert secret.current.value.get_secret_value() == "sk-acme-0123456789"
    assert secret.generations == (1,)
    assert secret.current.created_at > 1_600_000_000
    assert "sk-acme-0123456789" in known.values()


def test_missing_path_is_none_and_require_names_vault(
    vault: VaultKVStandin, tmp_path: Path
) -> None:
    """404 reads as None; require() names the path, the Vault address and the source."""
    source = token_source(vault, tmp_path)
    assert source.read("orgs/nobody/openai") is None
    with pytest.raises(SecretError) as caught:
        require(source, "orgs/nobody/openai")
    assert "secret/agentkeel/orgs/nobody/openai" in caught.value.message
    assert "vault" in caught.value.message and vault.url in caught.value.message


def test_write_read_and_delete_versions(vault: VaultKVStandin, tmp_path: Path) -> None:
    """Two versions written for a rotation read back newest first with their metadata,
    are stored in the KV entry's data, list, and delete removes them."""
    source = token_source(vault, tmp_path)
    source.write(
        "platform/openai",
        [
            SecretVersion(SecretStr("sk-new-0123456789"), 2, created_at=200.0),
            SecretVersion(SecretStr("sk-old-0123456789"), 1, created_at=100.0, activated_at=100.0),
        ],
    )
    stored = vault.get("secret", "agentkeel/platform/openai")
    assert stored is not None and [v["generation"] for v in stored["versions"]] == [2, 1]
    secret = source.read("platform/openai")
    assert secret is not None
    assert secret.generations == (2, 1)
    assert secret.current.value.get_secret_value() == "sk-old-0123456789"
    assert secret.accepts("sk-new-0123456789") is not None
    vault.put("secret", "agentkeel/orgs/acme/openai", {"value": "sk-acme-0123456789"})
    assert source.paths() == ["orgs/acme/openai", "platform/openai"]
    assert source.paths("orgs") == ["orgs/acme/openai"]
    source.delete("platform/openai")
    source.delete("platform/openai")
    assert source.read("platform/openai") is None


def test_bad_token_is_a_secret_error_without_the_token(
    vault: VaultKVStandin, tmp_path: Path
) -> None:
    """A token Vault refuses (403) is retried once with a fresh read of the token file,
    then fails naming the token file, never the token."""
    source = token_source(vault, tmp_path, token="hvs.wrong-0123456789")
    with pytest.raises(SecretError) as caught:
        source.read("orgs/acme/openai")
    assert "refused" in caught.value.message and "vault_token" in caught.value.message
    assert "hvs.wrong" not in caught.value.message
    # The token file is reread after a 403: a rotated token is picked up without a restart.
    (tmp_path / "vault_token").write_text(ROOT_TOKEN)
    assert source.read("orgs/acme/openai") is None


def test_kubernetes_login_and_relogin_on_403(vault: VaultKVStandin, tmp_path: Path) -> None:
    """Kubernetes auth logs in with the role and the service-account JWT; when the token
    stops working, one fresh login follows the 403 and the read succeeds."""
    jwt_file = tmp_path / "sa-token"
    jwt_file.write_text(JWT)
    vault.put("secret", "agentkeel/byok/ana/openai", {"value": "sk-ana-0123456789"})
    source = VaultSecretSource(
        settings=VaultSettings(
            url=vault.url, auth="kubernetes", role="agentkeel", jwt_file=jwt_file
        )
    )
    assert source.read("byok/ana/openai") is not None
    assert vault.logins == 1
    vault.revoke_tokens()
    secret = source.read("byok/ana/openai")
    assert secret is not None and secret.current.value.get_secret_value() == "sk-ana-0123456789"
    assert vault.logins == 2


def test_kubernetes_login_with_a_wrong_jwt_fails_clearly(
    vault: VaultKVStandin, tmp_path: Path
) -> None:
    """A JWT that the role does not accept is a SecretError naming the role."""
    jwt_file = tmp_path / "sa-token"
    jwt_file.write_text("not-the-jwt")
    source = VaultSecretSource(
        settings=VaultSettings(
            url=vault.url, auth="kubernetes", role="agentkeel", jwt_file=jwt_file
        )
    )
    with pytest.raises(SecretError, match="role 'agentkeel'"):
        source.read("byok/ana/openai")


def test_unreachable_vault_names_the_url(tmp_path: Path) -> None:
    """A Vault that does not answer is a SecretError that names the address."""
    (tmp_path / "t").write_text(ROOT_TOKEN)
    source = VaultSecretSource(
        settings=VaultSettings(url="http://127.0.0.1:9", token_file=tmp_path / "t", timeout_s=1)
    )
    with pytest.raises(SecretError, match=r"cannot be reached at http://127\.0\.0\.1:9"):
        source.read("x")


def test_token_auth_needs_a_token_file() -> None:
    """auth: token without token_file is a config error that says what to set."""
    with pytest.raises(ConfigError, match="token_file"):
        VaultSecretSource(settings=VaultSettings(auth="token"))
