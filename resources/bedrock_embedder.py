"""Amazon Bedrock Titan Multimodal Embeddings (``amazon.titan-embed-image-v1``) as an Embedder.

One ``InvokeModel`` request per image, so a batch gives exactly the vectors its images give
alone. Requests go through a client-side token bucket (run it below the account's
"On-demand InvokeModel requests per minute" quota) and at most ``max_concurrency`` are in
flight. botocore's own retries are switched off (``total_max_attempts=1``) so that every
retry passes the bucket again and is counted; this module retries throttling, 5xx,
model-not-ready and connection/read timeouts with full-jitter exponential backoff. Other
errors (validation, access denied, other 4xx) fail that image at once. A failed image never
fails the batch: ``embed_with_failures`` returns a NaN row and a reason for it.
"""

import base64
import io
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import boto3
import botocore.exceptions
import numpy as np
from botocore.config import Config
from PIL import Image

from photogroup.embed import EmbedOutcome, l2_normalise
from photogroup.ratelimit import LimiterStats, TokenBucket, backoff_delays

log = logging.getLogger(__name__)

TITAN_IMAGE_MODEL = "amazon.titan-embed-image-v1"
OUTPUT_LENGTHS = (256, 384, 1024)
#: Titan's documented input limits: 2048 x 2048 pixels, 25 MB.
MAX_SIDE = 2048

_THROTTLE_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling"})
_RETRYABLE_CODES = frozenset(
    {
        "ServiceUnavailableException",
        "ModelNotReadyException",  # also HTTP 429, but the model is warming up, not a quota
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)
# botocore's transient network errors: ConnectTimeoutError, EndpointConnectionError
# (ConnectionError); ReadTimeoutError, ConnectionClosedError (HTTPClientError).
_RETRYABLE_EXCEPTIONS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
_MAX_REASON = 300


class EmbeddingFailed(RuntimeError):
    """``embed()`` was asked for vectors but the provider refused some images."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = dict(failures)
        shown = "; ".join(f"image {i}: {r}" for i, r in sorted(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"Bedrock could not embed {len(failures)} image(s): {shown}{more}")


class _Retryable(Exception):
    def __init__(self, reason: str, throttled: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.throttled = throttled


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_output_length(output_length: int) -> int:
    if isinstance(output_length, bool) or output_length not in OUTPUT_LENGTHS:
        raise ValueError(
            f"output_length must be one of 256, 384 or 1024 (Titan Multimodal Embeddings G1), "
            f"got {output_length!r}"
        )
    return int(output_length)


def client_config(
    max_concurrency: int = 4,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> Config:
    """botocore settings: our loop owns retries, the pool fits the worker threads.

    ``total_max_attempts=1`` means one attempt and no botocore retry. (The legacy
    ``max_attempts`` key counts *retries*: ``{"max_attempts": 1}`` would still retry once
    inside botocore, unseen by the bucket and the counters.)
    """
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(1, max_concurrency),
    )


def encode_image(img: Image.Image) -> str:
    """Base64 PNG (lossless, so the provider sees our pixels), within Titan's size limit."""
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img = img.copy()
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _model_slug(model: str) -> str:
    name = model.rsplit("/", 1)[-1].removeprefix("amazon.")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


# Reasons end up in logs and asset metadata: strip anything credential-shaped first (URL
# user-info, access key ids, signatures and session tokens echoed back by an endpoint).
_SECRET_PATTERNS = (
    (re.compile(r"(?<=://)[^/@\s]+@"), "***@"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "***"),
    (
        re.compile(r"(?i)(signature|security-token|credential)([=:]\s*)\S+"),
        r"\1\2***",
    ),
)


def _clip(text: str) -> str:
    """One line, at most _MAX_REASON characters, credential-shaped parts redacted."""
    text = " ".join(str(text).split())
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class BedrockEmbedder:
    """Titan Multimodal Embeddings G1 behind photogroup's ``Embedder`` interface."""

    def __init__(
        self,
        client: Any,
        output_length: int = 1024,
        requests_per_minute: float = 100.0,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        *,
        model: str = TITAN_IMAGE_MODEL,
        burst: int | None = None,
        headroom: float = 0.9,
        backoff_base: float = 1.0,
        backoff_cap: float = 8.0,
        limiter: TokenBucket | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """``requests_per_minute`` is the provider's quota; the bucket runs at ``headroom``
        times it (pass ``limiter`` to control the bucket fully)."""
        self.output_length = check_output_length(output_length)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self._client = client
        self.model = model
        self.dim = self.output_length
        self.model_id = f"bedrock-{_model_slug(model)}-{self.output_length}"
        self.max_concurrency = int(max_concurrency)
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.limiter = limiter or TokenBucket.for_limit(
            requests_per_minute, headroom=headroom, burst=burst
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        region: str | None = None,
        endpoint_url: str | None = None,
        output_length: int = 1024,
        requests_per_minute: float = 100.0,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        timeout_seconds: float = 30.0,
        *,
        connect_timeout_seconds: float = 5.0,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Build the ``bedrock-runtime`` client and the embedder.

        Credentials left ``None`` come from boto3's usual chain (environment, profile,
        instance role). They go to the client only; the embedder keeps no copy.
        """
        output_length = check_output_length(output_length)
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
            output_length=output_length,
            requests_per_minute=requests_per_minute,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"BedrockEmbedder(model={self.model!r}, output_length={self.output_length}, "
            f"rate_per_minute={self.limiter.rate_per_minute:g}, "
            f"max_concurrency={self.max_concurrency})"
        )

    # -- Embedder interface ----------------------------------------------------------------

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``len(images) x dim`` unit float32 rows; raises EmbeddingFailed if any image failed."""
        outcome = self.embed_with_failures(images)
        if outcome.failures:
            raise EmbeddingFailed(outcome.failures)
        return outcome.vectors

    def embed_with_failures(self, images: Sequence[Image.Image]) -> EmbedOutcome:
        """Vectors for every image that could be embedded; NaN rows plus reasons for the rest."""
        vectors = np.full((len(images), self.dim), np.nan, dtype=np.float32)
        failures: dict[int, str] = {}
        if not images:
            return EmbedOutcome(vectors, failures)
        workers = min(self.max_concurrency, len(images))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bedrock") as pool:
            results = pool.map(self._embed_one, images)
            for index, (vector, reason) in enumerate(results):
                if vector is None:
                    failures[index] = reason or "unknown error"
                    log.warning("Bedrock embedding failed for image %d: %s", index, reason)
                else:
                    vectors[index] = vector
        return EmbedOutcome(vectors, failures)

    def stats(self) -> dict[str, int | float]:
        """Rate-limiter and retry counters since construction, as asset metadata."""
        return self.limiter.stats.as_metadata()

    # -- one image -------------------------------------------------------------------------

    def _embed_one(self, img: Image.Image) -> tuple[np.ndarray | None, str | None]:
        try:
            body = json.dumps(
                {
                    "inputImage": encode_image(img),
                    "embeddingConfig": {"outputEmbeddingLength": self.output_length},
                }
            )
        except (OSError, ValueError) as exc:
            return None, _clip(f"encode_error: {type(exc).__name__}: {exc}")
        stats: LimiterStats = self.limiter.stats
        for attempt in range(self.max_attempts):
            if attempt:
                stats.record_retry()
            self.limiter.acquire()
            try:
                return self._invoke(body), None
            except _Failed as failed:
                return None, failed.reason
            except _Retryable as retry:
                if retry.throttled:
                    stats.record_throttle()
                if attempt == self.max_attempts - 1:
                    return None, f"{retry.reason} (gave up after {self.max_attempts} attempts)"
                with self._rng_lock:
                    delay = backoff_delays(attempt, self.backoff_base, self.backoff_cap, self._rng)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _invoke(self, body: str) -> np.ndarray:
        """One InvokeModel call: a unit vector, or _Retryable / _Failed."""
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
        return self._vector(payload)

    def _vector(self, payload: Any) -> np.ndarray:
        embedding = payload.get("embedding") if isinstance(payload, dict) else None
        if not isinstance(embedding, list):
            message = payload.get("message") if isinstance(payload, dict) else None
            raise _Failed(_clip(f"bad_response: no embedding in the response ({message})"))
        row = np.asarray(embedding, dtype=np.float32)
        if row.shape != (self.dim,):
            raise _Failed(f"bad_response: embedding of length {row.size}, expected {self.dim}")
        if not np.isfinite(row).all() or not np.any(row):
            raise _Failed("bad_response: embedding is zero or not finite")
        return l2_normalise(row[None, :])[0]


def _classify(exc: botocore.exceptions.ClientError) -> Exception:
    """Retryable (throttling, 5xx, not ready) or final (validation, access, other 4xx)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = error.get("Message") or ""
    reason = _clip(
        f"{code or f'HTTP {status}'}: {message}" if message else code or f"HTTP {status}"
    )
    if code in _THROTTLE_CODES or (status == 429 and code not in _RETRYABLE_CODES):
        return _Retryable(reason, throttled=True)
    if code in _RETRYABLE_CODES or (isinstance(status, int) and status >= 500):
        return _Retryable(reason, throttled=False)
    return _Failed(reason)
