"""The base every remote provider client stands on (Bedrock embeddings and cut-outs,
Replicate cut-outs): rate limiting, retries, error kinds, statistics and secret clipping.

A request is sent by :meth:`RemoteClient.call`: each attempt first takes a token from the
client's limiter (so retries are paced and counted like first tries), then sends. The
sender maps what went wrong to :class:`Retryable` (throttling, 5xx, timeouts, dropped
connections) or :class:`Failed` (validation and other 4xx, bad responses). tenacity repeats
retryable errors only, at most ``max_attempts`` tries, sleeping full-jitter exponential
backoff (AWS's "full jitter": uniform in ``[0, min(cap, base * 2**n)]``), never sooner than
a ``retry-after`` the provider sent (capped at MAX_RETRY_AFTER). Where every further request
would be refused alike (``stop_on_auth_failure``, an authorisation failure), the rest of the
call is not sent.
"""

from __future__ import annotations

import io
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import tenacity
from PIL import Image, UnidentifiedImageError

from photogroup.providers import Redactions, clip_reason, latency_percentiles
from photogroup.ratelimit import LimiterStats, backoff_delays

T = TypeVar("T")
R = TypeVar("R")

#: Longest ``retry-after`` obeyed as sent: a bad header must not stall a batch for an hour.
MAX_RETRY_AFTER = 120.0


class Limiter(Protocol):
    """What a client needs of a rate limiter (``TokenBucket``, ``SharedTokenBucket``)."""

    stats: LimiterStats

    def acquire(self) -> float: ...


class Retryable(Exception):
    """Worth another try: throttling, 5xx, a timeout or a dropped connection."""

    def __init__(
        self,
        reason: str,
        *,
        throttled: bool = False,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.throttled = throttled
        self.retry_after = retry_after
        self.request_id = request_id


class Failed(Exception):
    """Final for this image: validation, other 4xx, a bad response; ``auth`` if every
    further request would be refused the same way."""

    def __init__(
        self,
        reason: str,
        *,
        auth: bool = False,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.auth = auth
        self.status = status
        self.request_id = request_id


class RemoteClient:
    """Limiter, retries, counters, latencies and clipping for one provider client."""

    #: Credential-shaped text the provider might echo back, redacted from every reason.
    redactions: Redactions = ()
    #: Counters of ``_counts`` that ``stats()`` reports (others are kept but not shown).
    counted: Sequence[str] = ()
    #: The metadata name of the in-flight peak.
    in_flight_name = "requests_in_flight_max"
    #: An authorisation failure stops the rest of the call (not sent, each its reason).
    stop_on_auth_failure = False

    def __init__(
        self,
        limiter: Limiter,
        *,
        max_attempts: int,
        backoff_base: float = 1.0,
        backoff_cap: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``max_attempts`` counts the first request too."""
        if isinstance(max_attempts, bool) or max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.limiter = limiter
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # counters, latencies, in-flight, rng
        self._counts: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._in_flight = 0
        self._in_flight_max = 0
        self._refused: str | None = None  # the authorisation failure that stops this call

    # -- sending -----------------------------------------------------------------------

    def call(self, send: Callable[[], T]) -> T:
        """``send()`` behind a limiter token, retried on Retryable; Failed when it gives up."""
        stats = self.limiter.stats

        def attempt() -> T:
            if self._refused is not None:
                raise self._not_sent()
            self.limiter.acquire()
            try:
                return send()
            except Retryable as retry:
                if retry.throttled:
                    stats.record_throttle()
                    self._count("throttles")
                raise
            except Failed as failed:
                if failed.auth and self.stop_on_auth_failure and self._refused is None:
                    self._refused = failed.reason
                raise

        def before_sleep(_: tenacity.RetryCallState) -> None:
            if self._refused is not None:  # refused meanwhile: no retry, no sleep
                raise self._not_sent()
            stats.record_retry()
            self._count("retries")

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Retryable),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Retryable as retry:
            reason = f"{retry.reason} (gave up after {self.max_attempts} attempts)"
            raise Failed(reason, request_id=retry.request_id) from None

    def _not_sent(self) -> Failed:
        return Failed(f"not sent: an earlier request was refused ({self._refused})")

    def backoff(self, retries: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retries`` (0-based): full jitter, at least the
        provider's ``retry-after`` (capped)."""
        with self._lock:
            delay = backoff_delays(retries, self.backoff_base, self.backoff_cap, self._rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return self.backoff(state.attempt_number - 1, getattr(error, "retry_after", None))

    def each(self, work: Callable[[T], R], items: Sequence[T], workers: int, name: str) -> list[R]:
        """``work`` on every item, in order, at most ``workers`` at a time; a new call, so an
        earlier call's authorisation failure no longer stops anything."""
        self._refused = None
        if not items:
            return []
        with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name) as pool:
            return list(pool.map(work, items))

    def _alpha_mask(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        """A cut-out provider's output image as a mask: its alpha channel ("L") at ``size``
        (models may work on a downscaled copy; the mask must fit the input), or Failed."""
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise Failed(self.clip(f"bad_output: {type(exc).__name__}: {exc}")) from None
        if "A" not in img.getbands() and "transparency" not in img.info:
            raise Failed(f"bad_output: the output ({img.mode}) has no alpha channel")
        mask = img.convert("RGBA").getchannel("A")
        if mask.size != size:
            self._count("outputs_resized")
            mask = mask.resize(size, Image.Resampling.BILINEAR)
        return mask

    # -- bookkeeping -------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _started(self) -> None:
        """A request (or prediction) is now in flight."""
        with self._lock:
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)

    def _ended(self, latency: float | None = None) -> None:
        """It is no longer in flight; ``latency`` is kept if it succeeded."""
        with self._lock:
            self._in_flight -= 1
            if latency is not None:
                self._latencies.append(latency)

    def stats(self) -> dict[str, int | float]:
        """Counters since construction: the limiter's (shared with other clients if it was
        injected), this client's ``counted`` ones, the in-flight peak and latency
        percentiles of what succeeded."""
        with self._lock:
            counts = dict(self._counts)
            latencies = list(self._latencies)
            in_flight_max = self._in_flight_max
        return {
            **self.limiter.stats.as_metadata(),
            **{name: counts.get(name, 0) for name in self.counted},
            self.in_flight_name: in_flight_max,
            **latency_percentiles(latencies),
        }

    def _secrets(self) -> Iterable[str]:
        """Values this client holds that must never show (an API token)."""
        return ()

    def clip(self, text: object) -> str:
        """One line, at most 300 characters, secrets and credential-shaped text redacted."""
        return clip_reason(text, self.redactions, self._secrets())
