from __future__ import annotations

import pytest

from agentkeel.errors import ConfigError
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.resilience.storage import check_storage_uri, is_redis_uri
from agentkeel.secrets import redact_url
from agentkeel.tools.budget import SessionCallBudget


@pytest.mark.parametrize(
    "uri", ["memory://", "redis://127.0.0.1:6379/0", "rediss://cache:6380/1", "redis+unix:///s"]
)
def test_memory_and_redis_storage_are_accepted(uri: str) -> None:
    """memory:// and the three Redis schemes are valid counter storage."""
    check_storage_uri(uri, what="Rate-limit storage")
    assert is_redis_uri(uri) == (uri != "memory://")


def test_redact_url_hides_the_password_only() -> None:
    """The host, port and database stay readable; credentials do not."""
    assert redact_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


async def test_unsupported_storage_is_the_same_config_error_everywhere() -> None:
    """The rate limiter and the tool call budget refuse an unknown storage with one message
    that names the setting's storage, hides the password and lists what works."""
    with pytest.raises(ConfigError) as budget:
        SessionCallBudget(limit=5, storage_uri="memcached://user:hunter2@cache:11211")
    with pytest.raises(ConfigError) as limiter:
        await RateLimiter(per_minute=5, storage_uri="memcached://user:hunter2@cache:11211").hit("k")
    for error, what in ((budget, "Tool budget storage"), (limiter, "Rate-limit storage")):
        message = str(error.value)
        assert message.startswith(f"{what} 'memcached://user:***@cache:11211' is not supported")
        assert "hunter2" not in message
        assert "redis://host:port/db" in message
