"""photogroup.ratelimit: token bucket timing on a fake clock, stats, and backoff jitter."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from photogroup.ratelimit import LimiterStats, TokenBucket, backoff_delays

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Time that moves only when someone sleeps (single-threaded tests)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_window(times: list[float], window: float) -> int:
    """Most events in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def grant_times(bucket: TokenBucket, clock: FakeClock, n: int) -> list[float]:
    """When each of ``n`` sequential acquires got its token."""
    times = []
    for _ in range(n):
        bucket.acquire()
        times.append(clock.now)
    return times


def test_rate_is_respected_over_many_acquires():
    clock = FakeClock()
    bucket = TokenBucket(120, burst=1, clock=clock, sleep=clock.sleep)  # 2 per second
    times = grant_times(bucket, clock, 50)
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(49 * 0.5)
    assert max_in_window(times, 1.0) <= 2
    assert max_in_window(times, 10.0) <= 1 + 20


def test_burst_is_immediate_then_rate_applies():
    clock = FakeClock()
    bucket = TokenBucket(60, burst=5, clock=clock, sleep=clock.sleep)  # 1 per second
    times = grant_times(bucket, clock, 8)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([1.0, 2.0, 3.0])
    # An idle bucket refills, but never above its burst.
    clock.now += 100.0
    start = clock.now
    times = grant_times(bucket, clock, 6)
    assert times[:5] == [start] * 5
    assert times[5] == pytest.approx(start + 1.0)


def test_any_window_holds_at_most_burst_plus_rate():
    clock = FakeClock()
    bucket = TokenBucket(600, burst=3, clock=clock, sleep=clock.sleep)  # 10 per second
    times = grant_times(bucket, clock, 100)
    for window in (0.1, 0.55, 1.0, 3.0):
        assert max_in_window(times, window) <= 3 + 10 * window + 1e-9


def test_default_burst_is_one_second_of_rate():
    assert TokenBucket(600).burst == 10
    assert TokenBucket(30).burst == 1


def test_for_limit_runs_below_the_documented_limit():
    bucket = TokenBucket.for_limit(1000, headroom=0.9)
    assert bucket.rate_per_minute == pytest.approx(900)
    assert bucket.burst == 15  # one second of 900/min
    # Burst plus a minute of tokens stays under the documented limit.
    assert bucket.burst + bucket.rate_per_minute <= 1000
    tight = TokenBucket.for_limit(20, headroom=0.9)  # 2 per minute of slack
    assert tight.burst == 1
    with pytest.raises(ValueError, match="headroom"):
        TokenBucket.for_limit(100, headroom=1.5)


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf")])
def test_rejects_bad_rates(rate):
    with pytest.raises(ValueError, match="rate_per_minute"):
        TokenBucket(rate)


def test_rejects_bad_burst():
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(60, burst=0)


def test_thread_safety_every_token_granted_once():
    """Threads reserve tokens under the lock: with a frozen clock, each gets its own slot."""
    frozen = 0.0
    waits: list[float] = []
    waits_lock = threading.Lock()

    def no_sleep(seconds: float) -> None:
        pass

    bucket = TokenBucket(60, burst=2, clock=lambda: frozen, sleep=no_sleep)  # 1 per second
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(25):
            waited = bucket.acquire()
            with waits_lock:
                waits.append(waited)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # Two from the burst, then one slot per second: 1 s, 2 s, ... 98 s, each exactly once.
    assert sorted(waits) == pytest.approx([0.0, 0.0, *[float(k) for k in range(1, 99)]])
    assert bucket.stats.requests == 100
    assert bucket.stats.waits == 98


def test_thread_safety_with_real_threads_and_a_shared_fake_clock():
    """Concurrent acquires on a clock that sleeping advances: the grant schedule holds."""
    lock = threading.Lock()
    state = {"now": 0.0}
    grants: list[float] = []

    def clock() -> float:
        with lock:
            return state["now"]

    def sleep(seconds: float) -> None:
        # Record the wake-up time a real sleep would give; the clock itself stays put so
        # concurrent sleepers do not add up.
        with lock:
            grants.append(state["now"] + seconds)

    bucket = TokenBucket(120, burst=1, clock=clock, sleep=sleep)
    threads = [
        threading.Thread(target=lambda: [bucket.acquire() for _ in range(10)]) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    granted = sorted([0.0, *grants])  # the first acquire took the burst token
    assert len(granted) == 30
    assert max_in_window(granted, 1.0) <= 2
    assert granted[-1] == pytest.approx(29 * 0.5)


def test_stats_count_requests_waits_and_provider_events():
    clock = FakeClock()
    stats = LimiterStats()
    bucket = TokenBucket(60, burst=2, clock=clock, sleep=clock.sleep, stats=stats)
    for _ in range(5):
        bucket.acquire()
    stats.record_throttle()
    stats.record_retry()
    stats.record_retry()
    assert stats.as_metadata() == {
        "limiter_requests": 5,
        "limiter_waits": 3,
        "limiter_wait_seconds": 3.0,
        "provider_throttles": 1,
        "provider_retries": 2,
    }
    assert bucket.stats is stats


def test_backoff_is_full_jitter_under_an_exponential_cap():
    rng = random.Random(7)
    for attempt in range(8):
        ceiling = min(8.0, 1.0 * 2**attempt)
        delays = [backoff_delays(attempt, base=1.0, cap=8.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(delays) < 0.2 * ceiling < 0.8 * ceiling < max(delays)
    assert backoff_delays(1000, base=0.01, cap=0.05, rng=rng) <= 0.05
    with pytest.raises(ValueError):
        backoff_delays(-1)


def test_backoff_is_reproducible_with_a_seeded_rng():
    a = [backoff_delays(k, rng=random.Random(3)) for k in range(5)]
    b = [backoff_delays(k, rng=random.Random(3)) for k in range(5)]
    assert a == b


def test_imports_neither_dagster_nor_boto3():
    code = (
        "import sys, photogroup.ratelimit; "
        "print(sorted(m for m in ('dagster', 'boto3', 'botocore') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr
