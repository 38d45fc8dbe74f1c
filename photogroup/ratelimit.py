"""Client-side rate limiting for remote providers: a token bucket, its counters, and backoff.

Pure Python (no Dagster, no boto3), so the core stays importable on its own.

A provider documents a quota such as "N requests per minute"; callers should run the bucket
below it (``TokenBucket.for_limit(N, headroom=0.9)``) because the provider's window and
clock are not ours, and retries consume the same quota.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LimiterStats:
    """Counters one provider client accumulates; safe to update from many threads."""

    requests: int = 0  # tokens handed out, i.e. requests sent, retries included
    waits: int = 0  # acquires that had to sleep for a token
    wait_seconds: float = 0.0
    throttles: int = 0  # the provider answered 429 / ThrottlingException
    retries: int = 0  # requests repeated after a retryable error
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_acquire(self, waited: float) -> None:
        with self._lock:
            self.requests += 1
            if waited > 0:
                self.waits += 1
                self.wait_seconds += waited

    def record_throttle(self) -> None:
        with self._lock:
            self.throttles += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def as_metadata(self) -> dict[str, int | float]:
        with self._lock:
            return {
                "limiter_requests": self.requests,
                "limiter_waits": self.waits,
                "limiter_wait_seconds": round(self.wait_seconds, 3),
                "provider_throttles": self.throttles,
                "provider_retries": self.retries,
            }


class TokenBucket:
    """Hands out at most ``rate_per_minute`` tokens a minute, ``burst`` of them at once.

    In any window of ``T`` seconds at most ``burst + rate_per_minute * T / 60`` acquires
    return. The bucket starts full. Waiting callers *reserve* their token under the lock
    (the level may go negative) and sleep outside it, so threads are served in arrival
    order and no token is handed out twice; ``clock`` and ``sleep`` are injectable so tests
    need no real time.
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stats: LimiterStats | None = None,
    ) -> None:
        if not rate_per_minute > 0 or math.isinf(rate_per_minute):
            raise ValueError(f"rate_per_minute must be a positive number, got {rate_per_minute!r}")
        if burst is None:
            # One second's worth: smooth, yet fast providers are not serialised to 1 token.
            burst = max(1, int(rate_per_minute // 60))
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate_per_minute = float(rate_per_minute)
        self.burst = int(burst)
        self.stats = stats if stats is not None else LimiterStats()
        self._per_second = self.rate_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._updated = clock()

    @classmethod
    def for_limit(
        cls,
        limit_per_minute: float,
        headroom: float = 0.9,
        burst: int | None = None,
        **kwargs,
    ) -> TokenBucket:
        """A bucket at ``headroom`` x the provider's documented limit.

        The default burst is one second's worth of the reduced rate, but never more than
        the headroom left over, so even a full minute starting with a burst stays within
        ``limit_per_minute``.
        """
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        rate = limit_per_minute * headroom
        if burst is None:
            slack = int(limit_per_minute - rate)
            burst = max(1, min(int(rate // 60), slack))
        return cls(rate, burst=burst, **kwargs)

    def acquire(self) -> float:
        """Block until a token is available; return the seconds slept (0.0 if none)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(
                float(self.burst), self._tokens + (now - self._updated) * self._per_second
            )
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self._per_second if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        self.stats.record_acquire(wait)
        return wait


def backoff_delays(
    attempt: int,
    base: float = 1.0,
    cap: float = 8.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to sleep before retry number ``attempt`` (0-based): full jitter.

    Uniform in ``[0, min(cap, base * 2**attempt)]`` (AWS's "full jitter"), so clients that
    were throttled together do not all come back together.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt!r}")
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return (rng or random).uniform(0.0, ceiling)


def most_in_window(times: list[float], window: float) -> int:
    """Most events in any half-open window ``[t, t + window)``: what a provider's
    requests-per-window quota counts, for checking a limiter against request timestamps."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
