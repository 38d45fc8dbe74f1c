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

Per-image failures are returned in :class:`CutoutOutcome`, never raised. The limiter,
retries of creates, error kinds, counters and clipping are the shared provider client's
(resources/provider_client.py). The API token is held in a ``pydantic.SecretStr``, sent
only to ``base_url``'s origin (an output on another host, such as ``replicate.delivery``,
is fetched without it) and scrubbed from every error message. Images go as PNG data URLs;
Replicate recommends uploading files larger than a few hundred KB instead, which this
client does not do.

Caveat: a create retried after a connection error or read timeout may have been accepted
the first time, leaving an orphan (billed) prediction; losing the image instead would be
worse for a batch job, and Replicate's API has no idempotency key to prevent it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import heapq
import io
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from PIL import Image
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from photogroup.providers import CutoutOutcome
from photogroup.ratelimit import TokenBucket
from resources.provider_client import Failed, Limiter, RemoteClient, Retryable

log = logging.getLogger(__name__)

REPLICATE_API = "https://api.replicate.com"
#: Replicate's documented default limits, requests per minute.
CREATE_LIMIT_PER_MINUTE = 600
OTHER_LIMIT_PER_MINUTE = 3000
_RUNNING = frozenset({"starting", "processing"})
_PREDICTION_ID = re.compile(r"[A-Za-z0-9]+")
# Token-shaped text an endpoint might echo back, besides our own token.
_REDACTIONS = (
    (re.compile(r"\br8_[A-Za-z0-9]{8,}"), "r8_***"),
    (re.compile(r"(?i)\b(bearer|token)\s+\S+"), r"\1 ***"),
)


def secret_token(value: str | SecretStr) -> SecretStr:
    """The API token as a SecretStr (its repr and str show asterisks); never empty."""
    token = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(token, str) or not token.strip():
        raise ValueError("the API token must be a non-empty string")
    return SecretStr(token.strip())


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


class _BearerAuth(AuthBase):
    """The token as a requests auth object rather than a plain header: requests then skips
    its ``~/.netrc`` lookup (which would replace the header) and drops it on a redirect to
    another host."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
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


class ReplicateCutouts(RemoteClient):
    """Background-removal masks from a Replicate model, many predictions in flight: one
    CutoutProvider (photogroup.providers)."""

    redactions = _REDACTIONS
    stop_on_auth_failure = True  # a 401/403 create: every create would be refused alike
    in_flight_name = "predictions_in_flight_max"
    counted = (
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

    def __init__(
        self,
        api_token: str | SecretStr,
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
        **retry: Any,
    ) -> None:
        """``limiter`` paces creates (default: 90% of Replicate's 600/min), ``poll_limiter``
        polls and cancels (default: 90% of 3,000/min). Durations are seconds;
        ``max_retries`` is per request (create) or per consecutive error (poll/download);
        ``retry`` goes to RemoteClient (backoff_base, backoff_cap, sleep, rng)."""
        if create_concurrency < 1 or poll_concurrency < 1:
            raise ValueError("create_concurrency and poll_concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if not poll_interval > 0 or not prediction_timeout > 0:
            raise ValueError("poll_interval and prediction_timeout must be > 0")
        super().__init__(
            limiter or TokenBucket.for_limit(CREATE_LIMIT_PER_MINUTE),
            max_attempts=max_retries + 1,
            **retry,
        )
        self._token = secret_token(api_token)
        self._auth = _BearerAuth(self._token)
        self.version = version
        # The version pins the weights: masks (and memo keys) follow it.
        self.model_id = f"replicate-{hashlib.sha256(version.encode()).hexdigest()[:12]}"
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.poll_limiter: Limiter = poll_limiter or TokenBucket.for_limit(OTHER_LIMIT_PER_MINUTE)
        self.create_concurrency = int(create_concurrency)
        self.poll_concurrency = int(poll_concurrency)
        self.poll_interval = float(poll_interval)
        self.prediction_timeout = float(prediction_timeout)
        self.timeout = (float(connect_timeout), float(read_timeout))
        self.max_retries = int(max_retries)
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
        sessions = _Sessions()
        started = time.monotonic()
        try:
            create = lambda job: self._guarded(self._create, job, sessions)  # noqa: E731
            self.each(create, jobs, self.create_concurrency, "replicate-create")
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
        self._refused = None
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
        """The shared counters (the create limiter's requests, waits, throttles and retries
        of creates; polls and downloads; the in-flight peak; latency percentiles of the
        succeeded images), the poll limiter's waits and the last ``cut_out``'s phases."""
        with self._lock:
            create_phase, poll_phase = self._phases
        return {
            **super().stats(),
            "poll_limiter_waits": self.poll_limiter.stats.waits,
            "last_create_phase_seconds": round(create_phase, 3),
            "last_poll_phase_seconds": round(poll_phase, 3),
        }

    # -- phase 1: create -----------------------------------------------------------------

    def _create(self, job: _Job, sessions: _Sessions) -> None:
        job.started = time.monotonic()
        try:
            body = {"version": self.version, "input": {"image": _data_url(job.image)}}
        except (OSError, ValueError) as exc:
            self._finish(job, error=self.clip(f"encode_error: {type(exc).__name__}: {exc}"))
            return
        url = f"{self.base_url}/v1/predictions"
        try:
            payload = self.call(lambda: _json(self._request(sessions, "POST", url, body)))
        except Failed as failed:
            self._finish(job, error=failed.reason)
            return
        self._accepted(job, payload)

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
            raise Failed("bad_response: the create response has no prediction id")
        urls = payload.get("urls") if isinstance(payload.get("urls"), dict) else {}
        own = f"{self.base_url}/v1/predictions/{prediction_id}"
        # Follow the provider's URLs only on its own origin: the token goes with them.
        job.get_url = self._own_url(urls.get("get")) or own
        job.cancel_url = self._own_url(urls.get("cancel")) or f"{own}/cancel"
        job.prediction_id = prediction_id
        job.created = time.monotonic()
        self._count("predictions_created")
        self._started()

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
                    error = self.clip(str(payload.get("error") or "no error given"))
                    self._finish(job, error=f"prediction {status}: {error}")
                    return None
                if status != "succeeded":
                    raise Failed(self.clip(f"bad_response: unknown status {status!r}"))
                job.output_url = self._output_url(payload.get("output"))
            self._count("download_requests")
            response = self._request(
                sessions, "GET", job.output_url, auth=_origin(job.output_url) == self._origin
            )
            mask = self._alpha_mask(response.content, job.image.size)
            self._count("predictions_succeeded")
            self._finish(job, mask=mask)
            return None
        except Failed as failed:
            self._finish(job, error=failed.reason)
            return None
        except Retryable as retry:
            job.failures += 1
            self._count("poll_throttles" if retry.throttled else "poll_retries")
            if job.failures > self.max_retries:
                self._finish(job, error=f"{retry.reason} (gave up after {job.failures} errors)")
                return None
            return self.backoff(job.failures - 1, retry.retry_after)

    def _cancel(self, job: _Job, sessions: _Sessions) -> None:
        """Best effort: a timed-out prediction should stop costing money."""
        self.poll_limiter.acquire()
        self._count("cancel_requests")
        try:
            self._request(sessions, "POST", job.cancel_url)
        except (Failed, Retryable) as exc:
            log.debug("could not cancel prediction %s: %s", job.prediction_id, exc)

    def _output_url(self, output: Any) -> str:
        if isinstance(output, list) and output:
            output = output[0]  # some models return a list of files
        if not isinstance(output, str) or urllib.parse.urlsplit(output).scheme not in (
            "http",
            "https",
        ):
            raise Failed("bad_response: the prediction succeeded without an output URL")
        return output

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
            raise Retryable(self.clip(f"{type(exc).__name__}: {exc}")) from None
        except requests.RequestException as exc:
            raise Failed(self.clip(f"{type(exc).__name__}: {exc}")) from None
        status = response.status_code
        if status < 400:
            return response
        reason = self.clip(f"HTTP {status}: {_problem_detail(response)}")
        if status == 429:
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise Retryable(reason, throttled=True, retry_after=retry_after)
        if status >= 500:
            raise Retryable(reason)
        raise Failed(reason, auth=status in (401, 403), status=status)

    def _own_url(self, url: Any) -> str | None:
        return url if isinstance(url, str) and _origin(url) == self._origin else None

    def _finish(self, job: _Job, mask: Image.Image | None = None, error: str | None = None) -> None:
        seconds = time.monotonic() - (job.created if job.created is not None else job.started)
        job.outcome = CutoutOutcome(mask, error, seconds, job.prediction_id)
        if job.created is not None:
            self._ended(seconds if mask is not None else None)
        if mask is None:
            self._count("images_failed")
        if error is not None:
            log.warning("Replicate cut-out failed for image %d: %s", job.index, error)

    def _outcomes(self, jobs: list[_Job]) -> list[CutoutOutcome]:
        return [
            job.outcome or CutoutOutcome(None, "client_error: no outcome", 0.0, job.prediction_id)
            for job in jobs
        ]

    def _secrets(self) -> Iterable[str]:
        return (self._token.get_secret_value(),)


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
        raise Failed(f"bad_response: HTTP {response.status_code} body is not JSON") from None
    if not isinstance(payload, dict):
        raise Failed("bad_response: expected a JSON object")
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
