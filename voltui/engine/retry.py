"""Retry decisions: whether an error deserves another attempt and how long to wait first.

Kept apart from the WorkflowManager so the arithmetic is testable without running anything.
"""

from __future__ import annotations

import random
import re

from voltui.engine.models import RetryPolicy


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based) before the next one.

    Jitter is added on top (never subtracted) so `base_delay` stays a floor a user can rely on,
    and the total never exceeds `max_delay`.
    """
    base = policy.base_delay
    if policy.backoff == "fixed":
        delay = base
    elif policy.backoff == "linear":
        delay = base * attempt
    else:
        delay = base * (2 ** (attempt - 1))
    delay = min(delay, policy.max_delay)
    if policy.jitter:
        delay += (rng or random).uniform(0, policy.jitter * delay)
    return min(delay, policy.max_delay) if policy.max_delay >= base else delay


def should_retry(policy: RetryPolicy, attempt: int, error: str, *, retryable: bool = True) -> bool:
    """True when another attempt is allowed and the error is one the policy calls retryable."""
    if not retryable or attempt >= policy.max_attempts:
        return False
    if not policy.retryable_errors:
        return True
    return any(re.search(p, error) for p in policy.retryable_errors)
