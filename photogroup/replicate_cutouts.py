"""Background removal on Replicate's HTTP predictions API: create them all, then poll them all.

A prediction takes seconds (2-10 s for a background-removal model) but creating one takes a
single request, and Replicate meters *creates* (600 a minute by default; all other
endpoints 3,000 a minute). Creating one prediction and waiting for it before the next
leaves the quota idle for the whole latency, about ten images a minute. So
:meth:`ReplicateCutouts.cut_out` works in two phases:

1. create a prediction for every image, ``create_concurrency`` at a time, each create
   taking a token from ``limiter`` (run it below the account's limit); throttling (429,
   honouring ``retry-after``), 5xx and connection errors are retried with full-jitter
   backoff, other 4xx fail that image at once (a 401/403 also stops sending the rest:
   every create would be refused the same way);
2. poll every pending prediction, ``poll_concurrency`` requests at a time, each at most
   once per ``poll_interval``, until it succeeds, fails or times out (then it is
   cancelled), downloading each output as soon as it succeeds; the mask is its alpha.

The provider runs the predictions while phase 1 is still creating, so the run takes about
``len(images) / rate`` plus one latency, and a prediction's ``seconds`` includes the time
spent creating the ones after it. ``prediction_timeout`` counts from the later of its
create and the start of phase 2, so a long phase 1 does not time predictions out.

:meth:`ReplicateCutouts.create_and_wait_sequential` is the naive baseline (create, poll to
completion, next) for ``bench/cutouts.py``.

Per-image failures are returned in :class:`CutoutOutcome`, never raised. The API token is
held in a :class:`SecretToken`, sent only to ``base_url``'s origin (an output on another
host, such as ``replicate.delivery``, is fetched without it) and scrubbed from every
error message. Images go as PNG data URLs; Replicate recommends uploading files larger
than a few hundred KB instead, which this client does not do.

Caveat: a create retried after a connection error or read timeout may have been accepted
the first time, leaving an orphan (billed) prediction; losing the image instead would be
worse for a batch job, and Replicate's API has no idempotency key to prevent it.
"""

from __future__ import annotations

import base64
import email.utils
import heapq
import io
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import requests
from PIL import Image, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from photogroup.providers import CutoutOutcome
from photogroup.ratelimit import LimiterStats, TokenBucket, backoff_delays

log = logging.getLogger(__name__)

REPLICATE_API = "https://api.replicate.com"
#: Replicate's documented default limits, requests per minute.
CREATE_LIMIT_PER_MINUTE = 600
OTHER_LIMIT_PER_MINUTE = 3000
#: Longest ``retry-after`` obeyed as sent; a larger value is capped (a bad header must not
#: stall the batch for an hour).
MAX_RETRY_AFTER = 120.0
_MAX_REASON = 300
_RUNNING = frozenset({"starting", "processing"})
_PREDICTION_ID = re.compile(r"[A-Za-z0-9]+")
# Token-shaped text an endpoint might echo back, besides our own token.
_SECRET_PATTERNS = (
    (re.compile(r"\br8_[A-Za-z0-9]{8,}"), "r8_***"),
    (re.compile(r"(?i)\b(bearer|token)\s+\S+"), r"\1 ***"),
)


class Limiter(Protocol):
    """What the client needs of a rate limiter (``TokenBucket`` is one)."""

    stats: LimiterStats

    def acquire(self) -> float: ...


class SecretToken:
    """An API token that never shows itself in ``repr``/``str`` (logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("the API token must be a non-empty string")
        self._value = value.strip()

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretToken('**********')"

    __str__ = __repr__


@dataclass(eq=False)
class _Job:
    index: int
    image: Image.Image
    started: float = 0.0  # first create attempt
    created: float | None = None  # 201 received
    prediction_id: str | None = None
    get_url: str = ""
    cancel_url: str = ""
    output_url: str | None = None
    deadline: float = math.inf
    failures: int = 0  # consecutive retryable errors while polling or downloading
    outcome: CutoutOutcome | None = field(default=None, repr=False)


class _Retryable(Exception):
    def __init__(self, reason: str, throttled: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.throttled = throttled
        self.retry_after = retry_after


class _Failed(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _BearerAuth(AuthBase):
    """The token as a requests auth object rather than a plain header: requests then skips
    its ``~/.netrc`` lookup (which would replace the header) and drops it on a redirect to
    another host."""

    def __init__(self, token: SecretToken) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(**********)"


class _Sessions:
    """One ``requests.Session`` per worker thread (a Session is not documented thread-safe),
    all closed together when the call ends."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # No urllib3 retries: every retry is ours, so it is counted and rate limited.
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()


class ReplicateCutouts:
    """Background-removal masks from a Replicate model, many predictions in flight."""

    def __init__(
        self,
        api_token: str | SecretToken,
        version: str,
        *,
        base_url: str = REPLICATE_API,
        limiter: Limiter | None = None,
        poll_limiter: Limiter | None = None,
        create_concurrency: int = 4,
        poll_concurrency: int = 8,
        poll_interval: float = 0.5,
        prediction_timeout: float = 300.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 8.0,
        rng: random.Random | None = None,
    ) -> None:
        """``limiter`` paces creates (default: 90% of Replicate's 600/min), ``poll_limiter``
        polls and cancels (default: 90% of 3,000/min). Durations are seconds;
        ``max_retries`` is per request (create) or per consecutive error (poll/download)."""
        if create_concurrency < 1 or poll_concurrency < 1:
            raise ValueError("create_concurrency and poll_concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if not poll_interval > 0 or not prediction_timeout > 0:
            raise ValueError("poll_interval and prediction_timeout must be > 0")
        self._token = api_token if isinstance(api_token, SecretToken) else SecretToken(api_token)
        self._auth = _BearerAuth(self._token)
        self.version = version
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.limiter: Limiter = limiter or TokenBucket.for_limit(CREATE_LIMIT_PER_MINUTE)
        self.poll_limiter: Limiter = poll_limiter or TokenBucket.for_limit(OTHER_LIMIT_PER_MINUTE)
        self.create_concurrency = int(create_concurrency)
        self.poll_concurrency = int(poll_concurrency)
        self.poll_interval = float(poll_interval)
        self.prediction_timeout = float(prediction_timeout)
        self.timeout = (float(connect_timeout), float(read_timeout))
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # counters, latencies, in-flight, rng
        self._counts: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._in_flight = 0
        self._in_flight_max = 0
        self._auth_failure: str | None = None
        self._phases = (math.nan, math.nan)  # the last cut_out's create and poll phases

    def __repr__(self) -> str:
        return (
            f"ReplicateCutouts(base_url={self.base_url!r}, version={self.version!r}, "
            f"create_concurrency={self.create_concurrency}, "
            f"poll_concurrency={self.poll_concurrency}, api_token={self._token!r})"
        )

    # -- public --------------------------------------------------------------------------

    def cut_out(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        """One outcome per image, in order: phase 1 creates every prediction, phase 2 polls."""
        jobs = [_Job(i, img) for i, img in enumerate(images)]
        if not jobs:
            return []
        self._auth_failure = None
        sessions = _Sessions()
        started = time.monotonic()
        try:
            workers = min(self.create_concurrency, len(jobs))
            with ThreadPoolExecutor(workers, thread_name_prefix="replicate-create") as pool:
                for job in jobs:
                    pool.submit(self._guarded, self._create, job, sessions)
            phase_two = time.monotonic()
            pending = [job for job in jobs if job.outcome is None]
            for job in pending:
                job.deadline = max(job.created or phase_two, phase_two) + self.prediction_timeout
            self._poll_all(pending, sessions)
            with self._lock:
                self._phases = (phase_two - started, time.monotonic() - phase_two)
        finally:
            sessions.close()
        return self._outcomes(jobs)

    def create_and_wait_sequential(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        """The naive baseline: create one prediction, poll it to the end, then the next."""
        jobs = [_Job(i, img) for i, img in enumerate(images)]
        self._auth_failure = None
        sessions = _Sessions()
        try:
            for job in jobs:
                self._guarded(self._create, job, sessions)
                if job.outcome is not None:
                    continue
                job.deadline = (job.created or time.monotonic()) + self.prediction_timeout
                delay: float | None = self.poll_interval  # a fresh prediction is never done
                while delay is not None:
                    time.sleep(delay)
                    delay = self._guarded(self._advance, job, sessions)
        finally:
            sessions.close()
        return self._outcomes(jobs)

    def stats(self) -> dict[str, int | float]:
        """Counters since construction: the create limiter's (requests, waits, throttles,
        retries of creates), polls and downloads, in-flight peak, latency percentiles of the
        succeeded images; and how long the last ``cut_out``'s two phases took."""
        with self._lock:
            counts = dict(self._counts)
            latencies = list(self._latencies)
            in_flight_max = self._in_flight_max
            create_phase, poll_phase = self._phases
        p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (math.nan, math.nan)
        return {
            **self.limiter.stats.as_metadata(),
            "poll_limiter_waits": self.poll_limiter.stats.waits,
            **{
                name: counts.get(name, 0)
                for name in (
                    "predictions_created",
                    "predictions_succeeded",
                    "predictions_failed",
                    "predictions_timed_out",
                    "images_failed",
                    "poll_requests",
                    "poll_throttles",
                    "poll_retries",
                    "download_requests",
                    "cancel_requests",
                    "outputs_resized",
                )
            },
            "predictions_in_flight_max": in_flight_max,
            "latency_p50_seconds": round(float(p50), 3),
            "latency_p95_seconds": round(float(p95), 3),
            "last_create_phase_seconds": round(create_phase, 3),
            "last_poll_phase_seconds": round(poll_phase, 3),
        }

    # -- phase 1: create -----------------------------------------------------------------

    def _create(self, job: _Job, sessions: _Sessions) -> None:
        job.started = time.monotonic()
        try:
            body = {"version": self.version, "input": {"image": _data_url(job.image)}}
        except (OSError, ValueError) as exc:
            self._finish(job, error=self._clip(f"encode_error: {type(exc).__name__}: {exc}"))
            return
        stats = self.limiter.stats
        for attempt in range(self.max_retries + 1):
            if self._auth_failure is not None:
                refused = self._auth_failure
                self._finish(job, error=f"not sent: an earlier create was refused ({refused})")
                return
            if attempt:
                stats.record_retry()
            self.limiter.acquire()
            try:
                response = self._request(sessions, "POST", f"{self.base_url}/v1/predictions", body)
                self._accepted(job, _json(response))
                return
            except _Failed as failed:
                if failed.status in (401, 403):
                    self._auth_failure = failed.reason
                self._finish(job, error=failed.reason)
                return
            except _Retryable as retry:
                if retry.throttled:
                    stats.record_throttle()
                if attempt == self.max_retries:
                    attempts = self.max_retries + 1
                    self._finish(job, error=f"{retry.reason} (gave up after {attempts} attempts)")
                    return
                time.sleep(self._delay(attempt, retry))

    def _guarded(
        self, step: Callable[[_Job, _Sessions], float | None], job: _Job, sessions: _Sessions
    ) -> float | None:
        """Run one step; a bug fails that image (logged) instead of stranding the others."""
        try:
            return step(job, sessions)
        except Exception as exc:
            log.exception("Replicate cut-out client error on image %d", job.index)
            if job.outcome is None:
                self._finish(job, error=f"client_error: {type(exc).__name__}")
            return None

    def _accepted(self, job: _Job, payload: dict) -> None:
        prediction_id = payload.get("id")
        if not isinstance(prediction_id, str) or not _PREDICTION_ID.fullmatch(prediction_id):
            raise _Failed("bad_response: the create response has no prediction id")
        urls = payload.get("urls") if isinstance(payload.get("urls"), dict) else {}
        own = f"{self.base_url}/v1/predictions/{prediction_id}"
        # Follow the provider's URLs only on its own origin: the token goes with them.
        job.get_url = self._own_url(urls.get("get")) or own
        job.cancel_url = self._own_url(urls.get("cancel")) or f"{own}/cancel"
        job.prediction_id = prediction_id
        job.created = time.monotonic()
        with self._lock:
            self._counts["predictions_created"] += 1
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)

    # -- phase 2: poll and download ------------------------------------------------------

    def _poll_all(self, jobs: list[_Job], sessions: _Sessions) -> None:
        """Run ``_advance`` on every job whenever it is due, ``poll_concurrency`` at a time."""
        now = time.monotonic()
        due = [(now, job.index, job) for job in jobs]  # oldest prediction first
        heapq.heapify(due)
        ready = threading.Condition()
        busy = 0

        def worker() -> None:
            nonlocal busy
            while True:
                with ready:
                    while True:
                        if not due:
                            if busy == 0:
                                return
                            ready.wait()
                            continue
                        wait = due[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        ready.wait(wait)
                    _, _, job = heapq.heappop(due)
                    busy += 1
                delay = self._guarded(self._advance, job, sessions)
                with ready:
                    busy -= 1
                    if delay is not None:
                        heapq.heappush(due, (time.monotonic() + delay, job.index, job))
                    ready.notify_all()

        workers = min(self.poll_concurrency, len(jobs))
        if workers == 0:
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="replicate-poll") as pool:
            for future in [pool.submit(worker) for _ in range(workers)]:
                future.result()

    def _advance(self, job: _Job, sessions: _Sessions) -> float | None:
        """One poll (and the download, once succeeded): seconds until the next step, or
        None when the job has its outcome."""
        try:
            if job.output_url is None:
                self.poll_limiter.acquire()
                self._count("poll_requests")
                payload = _json(self._request(sessions, "GET", job.get_url))
                job.failures = 0
                status = payload.get("status")
                if status in _RUNNING:
                    if time.monotonic() < job.deadline:
                        return self.poll_interval
                    self._cancel(job, sessions)
                    self._count("predictions_timed_out")
                    self._finish(
                        job,
                        error=f"timed out after {self.prediction_timeout:g} s "
                        f"(still {status}); cancelled",
                    )
                    return None
                if status in ("failed", "canceled"):
                    self._count("predictions_failed")
                    error = self._clip(str(payload.get("error") or "no error given"))
                    self._finish(job, error=f"prediction {status}: {error}")
                    return None
                if status != "succeeded":
                    raise _Failed(self._clip(f"bad_response: unknown status {status!r}"))
                job.output_url = self._output_url(payload.get("output"))
            self._count("download_requests")
            response = self._request(
                sessions, "GET", job.output_url, auth=_origin(job.output_url) == self._origin
            )
            mask = self._alpha_mask(response.content, job.image.size)
            self._count("predictions_succeeded")
            self._finish(job, mask=mask)
            return None
        except _Failed as failed:
            self._finish(job, error=failed.reason)
            return None
        except _Retryable as retry:
            job.failures += 1
            self._count("poll_throttles" if retry.throttled else "poll_retries")
            if job.failures > self.max_retries:
                self._finish(job, error=f"{retry.reason} (gave up after {job.failures} errors)")
                return None
            return self._delay(job.failures - 1, retry)

    def _cancel(self, job: _Job, sessions: _Sessions) -> None:
        """Best effort: a timed-out prediction should stop costing money."""
        self.poll_limiter.acquire()
        self._count("cancel_requests")
        try:
            self._request(sessions, "POST", job.cancel_url)
        except (_Failed, _Retryable) as exc:
            log.debug("could not cancel prediction %s: %s", job.prediction_id, exc)

    def _output_url(self, output: Any) -> str:
        if isinstance(output, list) and output:
            output = output[0]  # some models return a list of files
        if not isinstance(output, str) or urllib.parse.urlsplit(output).scheme not in (
            "http",
            "https",
        ):
            raise _Failed("bad_response: the prediction succeeded without an output URL")
        return output

    def _alpha_mask(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise _Failed(self._clip(f"bad_output: {type(exc).__name__}: {exc}")) from None
        if "A" not in img.getbands() and "transparency" not in img.info:
            raise _Failed(f"bad_output: the output ({img.mode}) has no alpha channel")
        mask = img.convert("RGBA").getchannel("A")
        if mask.size != size:
            # Models may work on a downscaled copy; the mask must fit the input.
            self._count("outputs_resized")
            mask = mask.resize(size, Image.Resampling.BILINEAR)
        return mask

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self,
        sessions: _Sessions,
        method: str,
        url: str,
        body: dict | None = None,
        auth: bool = True,
    ) -> requests.Response:
        """One request: the response if 2xx, else _Retryable (429, 5xx, network) or _Failed."""
        try:
            response = sessions.get().request(
                method, url, json=body, auth=self._auth if auth else None, timeout=self.timeout
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(self._clip(f"{type(exc).__name__}: {exc}")) from None
        except requests.RequestException as exc:
            raise _Failed(self._clip(f"{type(exc).__name__}: {exc}")) from None
        status = response.status_code
        if status < 400:
            return response
        reason = self._clip(f"HTTP {status}: {_problem_detail(response)}")
        if status == 429:
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise _Retryable(reason, throttled=True, retry_after=retry_after)
        if status >= 500:
            raise _Retryable(reason)
        raise _Failed(reason, status)

    def _own_url(self, url: Any) -> str | None:
        return url if isinstance(url, str) and _origin(url) == self._origin else None

    def _delay(self, attempt: int, retry: _Retryable) -> float:
        """Full-jitter backoff, never sooner than the provider's retry-after."""
        with self._lock:
            delay = backoff_delays(attempt, self.backoff_base, self.backoff_cap, self._rng)
        if retry.retry_after is not None:
            delay = max(delay, min(retry.retry_after, MAX_RETRY_AFTER))
        return delay

    # -- bookkeeping -----------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _finish(self, job: _Job, mask: Image.Image | None = None, error: str | None = None) -> None:
        seconds = time.monotonic() - (job.created if job.created is not None else job.started)
        job.outcome = CutoutOutcome(mask, error, seconds, job.prediction_id)
        with self._lock:
            if job.created is not None:
                self._in_flight -= 1
            if mask is not None:
                self._latencies.append(seconds)
            else:
                self._counts["images_failed"] += 1
        if error is not None:
            log.warning("Replicate cut-out failed for image %d: %s", job.index, error)

    def _outcomes(self, jobs: list[_Job]) -> list[CutoutOutcome]:
        return [
            job.outcome or CutoutOutcome(None, "client_error: no outcome", 0.0, job.prediction_id)
            for job in jobs
        ]

    def _clip(self, text: str) -> str:
        """One line, at most _MAX_REASON characters, the token and token-shaped text gone."""
        text = " ".join(str(text).split()).replace(self._token.reveal(), "***")
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _data_url(img: Image.Image) -> str:
    """PNG (lossless: the model sees our pixels) as a data URL."""
    out = io.BytesIO()
    img.convert("RGB").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _json(response: requests.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        raise _Failed(f"bad_response: HTTP {response.status_code} body is not JSON") from None
    if not isinstance(payload, dict):
        raise _Failed("bad_response: expected a JSON object")
    return payload


def _problem_detail(response: requests.Response) -> str:
    """Replicate's errors are RFC 7807 problems: ``{"title", "detail", "status"}``."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200] or response.reason or "no details"
    if isinstance(payload, dict):
        return str(payload.get("detail") or payload.get("title") or payload)
    return str(payload)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` header: a number (fractions allowed) or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
