"""Circuit breakers, retries, rate limits and token budgets, each over an injectable clock."""

from agentkeel.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from agentkeel.resilience.budget import BudgetLimits, Reservation, TokenBudget
from agentkeel.resilience.clock import Clock, ManualClock, SystemClock
from agentkeel.resilience.ledger import BudgetLedger, Hold, InMemoryLedger, ReserveResult
from agentkeel.resilience.ratelimit import RateDecision, RateLimiter
from agentkeel.resilience.retry import RetryPolicy, parse_retry_after, retry_after_seconds

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BudgetLedger",
    "BudgetLimits",
    "CircuitBreaker",
    "Clock",
    "Hold",
    "InMemoryLedger",
    "ManualClock",
    "RateDecision",
    "RateLimiter",
    "Reservation",
    "ReserveResult",
    "RetryPolicy",
    "SystemClock",
    "TokenBudget",
    "parse_retry_after",
    "retry_after_seconds",
]
