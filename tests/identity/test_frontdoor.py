"""The front door: Authorization header in, principal out."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from agentkeel.config.auth import AuthSettings
from agentkeel.errors import Unauthorized
from agentkeel.identity.apikeys import ApiKeyStore
from agentkeel.identity.frontdoor import FrontDoor
from agentkeel.identity.principal import ANONYMOUS
from agentkeel.secrets.resolver import SecretResolver

ISSUER = "https://id.example.test/"


def door(tmp_path: Path, **auth: object) -> FrontDoor:
    return FrontDoor(
        AuthSettings.model_validate({"enabled": True, **auth}),
        secrets=SecretResolver(secrets_dir=tmp_path / "secrets"),
        data_dir=tmp_path,
    )


def test_disabled_is_anonymous(tmp_path: Path) -> None:
    """With auth off every caller is ANONYMOUS, header or not."""
    off = FrontDoor(AuthSettings(), secrets=SecretResolver(), data_dir=tmp_path)
    assert not off.enabled
    assert off.authenticate_now(None) is ANONYMOUS
    assert off.authenticate_now("Bearer whatever") is ANONYMOUS


async def test_missing_or_non_bearer_header_is_unauthenticated(tmp_path: Path) -> None:
    """No header, or Basic: 401 unauthenticated, saying which credentials are accepted,
    with a WWW-Authenticate challenge."""
    front = door(tmp_path)
    for header in (None, "Basic YWxpY2U6cHc="):
        with pytest.raises(Unauthorized) as caught:
            await front.authenticate(header)
        assert caught.value.code == "unauthenticated"
        assert "API key" in caught.value.message
        assert caught.value.www_authenticate == 'Bearer realm="agentkeel"'


def test_api_keys_come_from_the_data_dir_by_default(tmp_path: Path) -> None:
    """A key made in <data_dir>/api_keys.yaml is accepted; a wrong one is 401 with
    error=invalid_token in the challenge."""
    front = door(tmp_path)
    assert front.api_keys_path == tmp_path / "api_keys.yaml"
    made = ApiKeyStore(front.api_keys_path).create(name="ci", organization="acme", scopes=["chat"])
    principal = front.authenticate_now(f"Bearer {made.key}")
    assert principal is not None and principal.credential == "api_key:ci"
    with pytest.raises(Unauthorized) as caught:
        front.authenticate_now("Bearer ak_zzzzzzzz_" + "a" * 43)
    assert caught.value.www_authenticate is not None
    assert 'error="invalid_token"' in caught.value.www_authenticate


def test_a_mounted_keys_secret_wins_over_the_data_dir(tmp_path: Path) -> None:
    """secrets_dir/api_keys, when it exists, is the keys file."""
    mounted = tmp_path / "secrets" / "api_keys"
    made = ApiKeyStore(mounted).create(name="prod", organization="acme", scopes=["chat"])
    front = door(tmp_path)
    assert front.api_keys_path == mounted
    principal = front.authenticate_now(f"Bearer {made.key}")
    assert principal is not None and principal.credential == "api_key:prod"


def test_a_jwt_without_oidc_configured_is_refused(tmp_path: Path) -> None:
    """A bearer that is not an API key, with no OIDC issuer: 401 naming auth.oidc.issuer."""
    with pytest.raises(Unauthorized, match=r"auth\.oidc\.issuer"):
        door(tmp_path).authenticate_now("Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig")


async def test_oidc_tokens_go_to_the_oidc_verifier(tmp_path: Path) -> None:
    """With auth.oidc configured, a JWT bearer becomes an oidc principal."""
    key = Ed25519PrivateKey.generate()
    jwks = tmp_path / "jwks.json"
    public = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    front = door(tmp_path, oidc={"issuer": ISSUER, "audience": "agentkeel", "jwks_file": str(jwks)})
    import time

    token = jwt.encode(
        {"iss": ISSUER, "aud": "agentkeel", "sub": "ana", "exp": int(time.time()) + 60},
        key,
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    try:
        principal = await front.authenticate(f"Bearer {token}")
        assert principal.kind == "oidc" and principal.user_id == "ana"
        with pytest.raises(Unauthorized) as caught:
            await front.authenticate("Bearer " + token[:-4] + "AAAA")
        assert caught.value.code == "token_signature"
    finally:
        await front.aclose()


def test_a_refusal_renders_as_401_with_its_challenge(tmp_path: Path) -> None:
    """The error renderer answers a front-door refusal with 401, the JSON error shape and
    the WWW-Authenticate header."""
    from agentkeel.web.errors import error_response

    with pytest.raises(Unauthorized) as caught:
        door(tmp_path).authenticate_now(None)
    response = error_response(caught.value)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="agentkeel"'
    assert json.loads(bytes(response.body))["error"]["code"] == "unauthenticated"
