"""Verified callers from hop to hop: signed caller assertions and their keys.

>>> from agentkeel.identity import CallerSigner, CallerVerifier, generate_key_pair
"""

from agentkeel.identity.assertion import (
    ALGORITHM,
    MAX_TTL_S,
    CallerAssertion,
    CallerSigner,
    CallerVerifier,
    sign_caller_assertion,
    verify_caller_assertion,
)
from agentkeel.identity.factory import build_caller_signer, build_caller_verifier
from agentkeel.identity.keys import (
    KeyPairPem,
    generate_key_pair,
    load_public_key,
    load_signing_key,
)
from agentkeel.identity.replay import ReplayCache

__all__ = [
    "ALGORITHM",
    "MAX_TTL_S",
    "CallerAssertion",
    "CallerSigner",
    "CallerVerifier",
    "KeyPairPem",
    "ReplayCache",
    "build_caller_signer",
    "build_caller_verifier",
    "generate_key_pair",
    "load_public_key",
    "load_signing_key",
    "sign_caller_assertion",
    "verify_caller_assertion",
]
