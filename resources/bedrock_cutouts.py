"""Background removal ("cut-outs") with Amazon Titan Image Generator v2 on Amazon Bedrock.

One ``InvokeModel`` request per image: ``{"taskType": "BACKGROUND_REMOVAL",
"backgroundRemovalParams": {"image": <base64 PNG>}}``, answered ``{"images": [<base64 PNG
with alpha>], "error": null}``; the mask is that PNG's alpha channel, resized (bilinear) to
the input's size when the model returns another.

Input limits (AWS's Titan Image Generator model card): at most 1,408 px on a side for
background removal (as for in/outpainting, image conditioning and colour palettes; image
variation allows 4,096) and 5 MB per input image. Larger images are downscaled (aspect kept)
before sending, and a PNG still over 5 MB is shrunk further, so the model sees fewer pixels
than the photo has; the mask is scaled back up. Whether Titan also has a *minimum* side for
this task is not documented where we looked: small images are sent as they are and a refusal
comes back as that image's ``ValidationException``.

Requests go through a client-side token bucket (run it below the account's "On-demand
InvokeModel requests per minute" quota for the model, which Service Quotas shows; the
default assumes 60) and at most ``max_concurrency`` are in flight. botocore's own retries
are off (``total_max_attempts=1``) so that every retry passes the bucket again and is
counted; throttling (ThrottlingException / 429), 5xx, ``ModelTimeoutException`` and
connection errors or read timeouts are retried with full-jitter backoff. Other errors
(validation, other 4xx) fail that image at once; an authorisation failure (access denied,
bad or expired credentials) also stops sending the rest, which would be refused the same
way. Per-image failures are returned in :class:`CutoutOutcome`, never raised; reasons are
one line, with anything credential-shaped redacted.
"""

import base64
import io
import json
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Self

import boto3
import botocore.exceptions
import numpy as np
from PIL import Image, UnidentifiedImageError

from photogroup.providers import CutoutOutcome
from photogroup.ratelimit import LimiterStats, TokenBucket, backoff_delays
from resources.bedrock_embedder import (
    _RETRYABLE_CODES,
    _RETRYABLE_EXCEPTIONS,
    _THROTTLE_CODES,
    _clip,
    _model_slug,
    client_config,
)

log = logging.getLogger(__name__)

TITAN_IMAGE_GENERATOR_V2 = "amazon.titan-image-generator-v2:0"
#: Titan Image Generator's largest input side for background removal, in px.
MAX_SIDE = 1408
#: Titan Image Generator's largest input image, in bytes (of the decoded file).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: Assumed account quota when none is given; check Service Quotas for the real one.
DEFAULT_REQUESTS_PER_MINUTE = 60.0

# The model is still producing when Bedrock gives up waiting (HTTP 408): worth another try.
_RETRY_CODES = _RETRYABLE_CODES | {"ModelTimeoutException"}
# Every further request would be refused the same way.
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)


class Limiter(Protocol):
    """What the client needs of a rate limiter (``TokenBucket`` is one)."""

    stats: LimiterStats

    def acquire(self) -> float: ...


class _Retryable(Exception):
    def __init__(self, reason: str, throttled: bool, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.throttled = throttled
        self.request_id = request_id


class _Failed(Exception):
    def __init__(self, reason: str, auth: bool = False, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.auth = auth
        self.request_id = request_id


def encode_image(img: Image.Image, max_side: int = MAX_SIDE) -> tuple[str, bool]:
    """Base64 PNG (lossless: the model sees our pixels) within Titan's limits, and whether
    it had to be downscaled for them."""
    img = img.convert("RGB")
    downscaled = False
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        downscaled = True
    while True:
        out = io.BytesIO()
        img.save(out, format="PNG")
        data = out.getvalue()
        if len(data) <= MAX_IMAGE_BYTES or min(img.size) <= 64:
            return base64.b64encode(data).decode("ascii"), downscaled
        # A noisy photo's PNG can pass 5 MB at 1,408 px; fewer pixels, still lossless.
        side = int(max(img.size) * 0.8)
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        downscaled = True


class BedrockCutouts:
    """Titan Image Generator v2 background removal behind the cut-out provider interface."""

    def __init__(
        self,
        client: Any,
        requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        *,
        model: str = TITAN_IMAGE_GENERATOR_V2,
        max_side: int = MAX_SIDE,
        burst: int | None = None,
        headroom: float = 0.9,
        backoff_base: float = 1.0,
        backoff_cap: float = 8.0,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``client`` is a boto3 ``bedrock-runtime`` client. ``requests_per_minute`` is the
        provider's quota; the bucket runs at ``headroom`` times it (pass ``limiter``, e.g. a
        bucket shared with other clients, to control it fully). ``max_attempts`` counts the
        first request too."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 64:
            raise ValueError(f"max_side must be an integer >= 64, got {max_side!r}")
        self._client = client
        self.model = model
        self.max_side = max_side
        # The side limit changes what the model sees, hence the masks.
        self.model_id = f"bedrock-{_model_slug(model)}-background-removal-{max_side}"
        self.max_concurrency = int(max_concurrency)
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.limiter: Limiter = limiter or TokenBucket.for_limit(
            requests_per_minute, headroom=headroom, burst=burst
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # counters, latencies, in-flight, rng
        self._counts: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._in_flight = 0
        self._in_flight_max = 0
        self._refused: str | None = None  # the auth failure that stops the current call

    @classmethod
    def from_settings(
        cls,
        region: str | None = None,
        endpoint_url: str | None = None,
        requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        timeout_seconds: float = 60.0,
        *,
        connect_timeout_seconds: float = 5.0,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Build the ``bedrock-runtime`` client and the provider.

        ``timeout_seconds`` is the read timeout (background removal takes seconds).
        Credentials left ``None`` come from boto3's usual chain (environment, profile,
        instance role). They go to the client only; the provider keeps no copy.
        """
        session = boto3.session.Session(profile_name=profile_name)
        client = session.client(
            "bedrock-runtime",
            region_name=region,
            endpoint_url=endpoint_url or None,
            aws_access_key_id=aws_access_key_id or None,
            aws_secret_access_key=aws_secret_access_key or None,
            aws_session_token=aws_session_token or None,
            config=client_config(max_concurrency, connect_timeout_seconds, timeout_seconds),
        )
        return cls(
            client,
            requests_per_minute=requests_per_minute,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            **kwargs,
        )

    def __repr__(self) -> str:
        rate = getattr(self.limiter, "rate_per_minute", None)
        return (
            f"BedrockCutouts(model={self.model!r}, max_side={self.max_side}, "
            f"rate_per_minute={rate if rate is None else format(rate, 'g')}, "
            f"max_concurrency={self.max_concurrency})"
        )

    # -- public --------------------------------------------------------------------------

    def cut_out(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        """One outcome per image, in order, ``max_concurrency`` requests at a time."""
        if not images:
            return []
        self._refused = None
        workers = min(self.max_concurrency, len(images))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bedrock-cutout") as pool:
            outcomes = list(pool.map(self._cut_one, images))
        for index, outcome in enumerate(outcomes):
            if outcome.error is not None:
                log.warning("Bedrock cut-out failed for image %d: %s", index, outcome.error)
        return outcomes

    def stats(self) -> dict[str, int | float]:
        """Counters since construction: the limiter's (shared with other clients if it was
        injected), this client's requests, throttles and retries, images, the in-flight
        peak, and latency percentiles of the successful requests."""
        with self._lock:
            counts = dict(self._counts)
            latencies = list(self._latencies)
            in_flight_max = self._in_flight_max
        p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (math.nan, math.nan)
        return {
            **self.limiter.stats.as_metadata(),
            **{
                name: counts.get(name, 0)
                for name in (
                    "requests",
                    "throttles",
                    "retries",
                    "images_succeeded",
                    "images_failed",
                    "images_downscaled",
                    "outputs_resized",
                )
            },
            "requests_in_flight_max": in_flight_max,
            "latency_p50_seconds": round(float(p50), 3),
            "latency_p95_seconds": round(float(p95), 3),
        }

    # -- one image -------------------------------------------------------------------------

    def _cut_one(self, img: Image.Image) -> CutoutOutcome:
        started = time.monotonic()
        request_id: str | None = None
        try:
            encoded, downscaled = encode_image(img, self.max_side)
            size = img.size
        except Exception as exc:  # Pillow's decoders raise many types on a bad file
            reason = _clip(f"encode_error: {type(exc).__name__}: {exc}")
            return self._finish(started, None, reason, None)
        if downscaled:
            self._count("images_downscaled")
        body = json.dumps(
            {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": encoded}}
        )
        stats = self.limiter.stats
        for attempt in range(self.max_attempts):
            if self._refused is not None:
                reason = f"not sent: an earlier request was refused ({self._refused})"
                return self._finish(started, None, reason, request_id)
            if attempt:
                stats.record_retry()
                self._count("retries")
            self.limiter.acquire()
            try:
                payload, request_id = self._invoke(body)
                return self._finish(started, self._mask(payload, size), None, request_id)
            except _Failed as failed:
                request_id = failed.request_id or request_id
                if failed.auth and self._refused is None:
                    self._refused = failed.reason
                return self._finish(started, None, failed.reason, request_id)
            except _Retryable as retry:
                request_id = retry.request_id or request_id
                if retry.throttled:
                    stats.record_throttle()
                    self._count("throttles")
                if attempt == self.max_attempts - 1:
                    reason = f"{retry.reason} (gave up after {self.max_attempts} attempts)"
                    return self._finish(started, None, reason, request_id)
                with self._lock:
                    delay = backoff_delays(attempt, self.backoff_base, self.backoff_cap, self._rng)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _invoke(self, body: str) -> tuple[Any, str | None]:
        """One InvokeModel call: the decoded JSON and its request id, or _Retryable / _Failed."""
        with self._lock:
            self._counts["requests"] += 1
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)
        sent = time.monotonic()
        try:
            response = self._client.invoke_model(
                modelId=self.model,
                body=body,
                contentType="application/json",
                accept="application/json",
            )
            payload = json.loads(response["body"].read())
        except botocore.exceptions.ClientError as exc:
            raise _classify(exc) from None
        except _RETRYABLE_EXCEPTIONS as exc:
            raise _Retryable(_clip(f"{type(exc).__name__}: {exc}"), throttled=False) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _Failed(_clip(f"{type(exc).__name__}: {exc}")) from None
        except ValueError as exc:  # the body was not JSON
            raise _Failed(_clip(f"bad_response: {exc}")) from None
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._latencies.append(time.monotonic() - sent)
        request_id = response.get("ResponseMetadata", {}).get("RequestId")
        return payload, request_id

    def _mask(self, payload: Any, size: tuple[int, int]) -> Image.Image:
        """The output's alpha channel at ``size``, or _Failed."""
        if not isinstance(payload, dict):
            raise _Failed("bad_response: expected a JSON object")
        if payload.get("error"):
            raise _Failed(_clip(f"model_error: {payload['error']}"))
        images = payload.get("images")
        if not isinstance(images, list) or not images or not isinstance(images[0], str):
            raise _Failed("bad_response: no image in the response")
        try:
            out = Image.open(io.BytesIO(base64.b64decode(images[0], validate=True)))
            out.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise _Failed(_clip(f"bad_output: {type(exc).__name__}: {exc}")) from None
        if "A" not in out.getbands() and "transparency" not in out.info:
            raise _Failed(f"bad_output: the output ({out.mode}) has no alpha channel")
        mask = out.convert("RGBA").getchannel("A")
        if mask.size != size:
            # Downscaled to fit the model's limits (or the model worked smaller).
            self._count("outputs_resized")
            mask = mask.resize(size, Image.Resampling.BILINEAR)
        return mask

    # -- bookkeeping -----------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _finish(
        self,
        started: float,
        mask: Image.Image | None,
        error: str | None,
        request_id: str | None,
    ) -> CutoutOutcome:
        self._count("images_succeeded" if mask is not None else "images_failed")
        return CutoutOutcome(mask, error, time.monotonic() - started, request_id)


def _classify(exc: botocore.exceptions.ClientError) -> Exception:
    """Retryable (throttling, 5xx, model timeout, not ready) or final (validation, access,
    other 4xx)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = error.get("Message") or ""
    request_id = exc.response.get("ResponseMetadata", {}).get("RequestId")
    reason = _clip(
        f"{code or f'HTTP {status}'}: {message}" if message else code or f"HTTP {status}"
    )
    if code in _THROTTLE_CODES or (status == 429 and code not in _RETRY_CODES):
        return _Retryable(reason, throttled=True, request_id=request_id)
    if code in _RETRY_CODES or (isinstance(status, int) and status >= 500):
        return _Retryable(reason, throttled=False, request_id=request_id)
    auth = code in _AUTH_CODES or status in (401, 403)
    return _Failed(reason, auth=auth, request_id=request_id)
