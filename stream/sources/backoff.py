"""Reconnect delays: jittered exponential backoff (seconds)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: ``min(max, initial·2^attempt)`` scaled by U(0.5, 1.0],
    never below ``initial`` (attempt counts from 0)."""
    base = min(maximum, initial * (2.0 ** min(attempt, 60)))
    j = (rng or random).uniform(0.5, 1.0)
    return max(min(initial, maximum), base * j)
