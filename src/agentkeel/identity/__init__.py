"""Verified callers from hop to hop: the front door (API keys, OIDC, limits), the
front-door assertion, signed caller assertions and their keys.

>>> from agentkeel.identity import CallerSigner, CallerVerifier, generate_key_pair
>>> from agentkeel.identity import FrontDoor, FrontDoorSigner, FrontDoorVerifier
"""

from agentkeel.identity.apikeys import ApiKeyRecord, ApiKeys, ApiKeyStore, CreatedKey
from agentkeel.identity.assertion import (
    ALGORITHM,
    MAX_TTL_S,
    CallerAssertion,
    CallerSigner,
    CallerVerifier,
    sign_caller_assertion,
    verify_caller_assertion,
)
from agentkeel.identity.caller_limits import CallerLimits, TurnSlot
from agentkeel.identity.factory import build_caller_signer, build_caller_verifier
from agentkeel.identity.forwarded import (
    FrontDoorSigner,
    FrontDoorVerifier,
    build_front_door_signer,
    build_front_door_verifier,
)
from agentkeel.identity.frontdoor import FrontDoor
from agentkeel.identity.keys import (
    KeyPairPem,
    generate_key_pair,
    load_public_key,
    load_signing_key,
)
from agentkeel.identity.oidc import OidcVerifier
from agentkeel.identity.principal import ANONYMOUS, SCOPES, Principal
from agentkeel.identity.replay import ReplayCache

__all__ = [
    "ALGORITHM",
    "ANONYMOUS",
    "MAX_TTL_S",
    "SCOPES",
    "ApiKeyRecord",
    "ApiKeyStore",
    "ApiKeys",
    "CallerAssertion",
    "CallerLimits",
    "CallerSigner",
    "CallerVerifier",
    "CreatedKey",
    "FrontDoor",
    "FrontDoorSigner",
    "FrontDoorVerifier",
    "KeyPairPem",
    "OidcVerifier",
    "Principal",
    "ReplayCache",
    "TurnSlot",
    "build_caller_signer",
    "build_caller_verifier",
    "build_front_door_signer",
    "build_front_door_verifier",
    "generate_key_pair",
    "load_public_key",
    "load_signing_key",
    "sign_caller_assertion",
    "verify_caller_assertion",
]
