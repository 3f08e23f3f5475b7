"""The ``auth`` settings section: who may call the front door (router, or a replica
served directly), and how often.

    auth:
      enabled: true                      # on in every production config
      api_keys_file: null                # see AuthSettings.api_keys_path
      oidc:
        issuer: https://login.example.com/
        audience: agentkeel
        jwks_url: https://login.example.com/.well-known/jwks.json
      limits: {requests_per_minute_per_key: 600, concurrent_turns_per_user: 4}
      assertion_audience: agentkeel-agent

Keys and tokens are never settings values: the API keys file holds only
digests, and OIDC tokens are verified with the issuer's public keys.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SCOPES = ("chat", "sessions:read", "admin")
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""The JWT algorithms an OIDC token may use: public-key ones only, so a token signed
with an HMAC over the public key (HS/RS confusion) or ``alg: none`` is never accepted."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OidcSettings(_Section):
    """Bearer JWTs from an OIDC issuer, verified with its JWKS (a file or a URL)."""

    issuer: str | None = Field(default=None, description="The iss every token must carry.")
    audience: str | None = Field(default=None, description="The aud every token must carry.")
    jwks_url: str | None = Field(default=None, description="The issuer's JWKS over HTTPS.")
    jwks_file: Path | None = Field(default=None, description="A JWKS JSON file instead.")
    user_claim: str = Field(default="sub", min_length=1)
    org_claim: str = Field(default="org", min_length=1)
    scopes_claim: str = Field(
        default="scope", min_length=1, description="Space-separated string or list."
    )
    default_scopes: list[str] = Field(
        default_factory=lambda: ["chat", "sessions:read"],
        description="Scopes of a token whose scopes claim names none of ours.",
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    jwks_refresh_min_s: float = Field(
        default=30.0, ge=0, description="At most one JWKS refresh for an unknown kid this often."
    )
    jwks_cache_s: float = Field(default=300.0, gt=0, description="JWKS reused this long.")
    leeway_s: float = Field(default=30.0, ge=0, le=300)

    @property
    def configured(self) -> bool:
        """Whether OIDC tokens are accepted at all."""
        return self.issuer is not None

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused or not value:
            raise ValueError(
                f"auth.oidc.algorithms may hold only public-key algorithms "
                f"({', '.join(ASYMMETRIC_ALGORITHMS)}); refused: {refused or 'an empty list'}"
            )
        return value

    @field_validator("default_scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = [scope for scope in value if scope not in _SCOPES]
        if unknown:
            raise ValueError(
                f"auth.oidc.default_scopes: unknown scopes {unknown}; use {list(_SCOPES)}"
            )
        return value

    @model_validator(mode="after")
    def _complete(self) -> OidcSettings:
        if self.issuer is None:
            return self
        if not self.audience:
            raise ValueError("auth.oidc.audience is required with auth.oidc.issuer")
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("auth.oidc needs exactly one of jwks_url and jwks_file")
        return self


class AuthLimitSettings(_Section):
    """Per credential and per user limits at the front door; 0 = no limit."""

    requests_per_minute_per_key: int = Field(default=600, ge=0)
    requests_per_minute_per_user: int = Field(default=120, ge=0)
    concurrent_turns_per_key: int = Field(default=32, ge=0)
    concurrent_turns_per_user: int = Field(default=4, ge=0)
    turn_slot_ttl_s: float = Field(
        default=900.0,
        gt=0,
        description="Redis: a turn slot not released this long after it was taken (its "
        "process died) no longer counts.",
    )


class AuthSettings(_Section):
    """Authentication at the front door (see the module doc)."""

    enabled: bool = Field(
        default=False, description="Off: every caller is anonymous (local development only)."
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="The API keys file (digests only); unset = secrets_dir/<api_keys_secret> "
        "when that file exists, else <data_dir>/api_keys.yaml.",
    )
    api_keys_secret: str = Field(default="api_keys", min_length=1)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    limits: AuthLimitSettings = Field(default_factory=AuthLimitSettings)
    assertion_audience: str = Field(
        default="agentkeel-agent",
        min_length=1,
        description="The aud of the front-door assertion the router hands the replicas.",
    )

    def api_keys_path(self, *, secrets_dir: Path | None, data_dir: Path) -> Path:
        """Where the API keys file is: ``api_keys_file``; else a mounted
        ``secrets_dir/<api_keys_secret>`` when it exists (a read-only secret in
        production); else ``<data_dir>/api_keys.yaml``, where ``keel keys`` writes."""
        if self.api_keys_file is not None:
            return self.api_keys_file
        if secrets_dir is not None:
            mounted = secrets_dir / self.api_keys_secret
            if mounted.is_file():
                return mounted
        return data_dir / "api_keys.yaml"
