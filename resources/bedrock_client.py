"""Amazon Bedrock Runtime ``InvokeModel`` on the shared provider client: the boto3 client,
one call, and the mapping of its errors to retryable or final.

botocore's own retries are off (``total_max_attempts=1``) so that every retry passes the
limiter again and is counted. Throttling (ThrottlingException / 429), 5xx, model not ready
(and, where the model says so, model timeouts) and connection errors or read timeouts are
retried; validation, access and other 4xx errors are final.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Self

import boto3
import botocore.exceptions
from botocore.config import Config

from photogroup.ratelimit import TokenBucket
from resources.provider_client import Failed, Limiter, RemoteClient, Retryable

THROTTLE_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling"})
RETRYABLE_CODES = frozenset(
    {
        "ServiceUnavailableException",
        "ModelNotReadyException",  # also HTTP 429, but the model is warming up, not a quota
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)
# Every further request would be refused the same way.
AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
# botocore's transient network errors: ConnectTimeoutError, EndpointConnectionError
# (ConnectionError); ReadTimeoutError, ConnectionClosedError (HTTPClientError).
TRANSIENT_ERRORS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)

# Reasons end up in logs and asset metadata: strip anything credential-shaped first (URL
# user-info, access key ids, signatures and session tokens echoed back by an endpoint).
AWS_REDACTIONS = (
    (re.compile(r"(?<=://)[^/@\s]+@"), "***@"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "***"),
    (re.compile(r"(?i)(signature|security-token|credential)([=:]\s*)\S+"), r"\1\2***"),
)


def client_config(
    max_concurrency: int = 4,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> Config:
    """botocore settings: our loop owns retries, the pool fits the worker threads.

    ``total_max_attempts=1`` means one attempt and no botocore retry. (The legacy
    ``max_attempts`` key counts *retries*: ``{"max_attempts": 1}`` would still retry once
    inside botocore, unseen by the limiter and the counters.)
    """
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(1, max_concurrency),
    )


def model_slug(model: str) -> str:
    """A model id as part of our ``model_id`` (memo keys): no ARN prefix, no odd characters."""
    name = model.rsplit("/", 1)[-1].removeprefix("amazon.")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


class BedrockClient(RemoteClient):
    """One Bedrock model behind the shared limiter, retries and counters."""

    redactions = AWS_REDACTIONS
    #: Error codes retried besides throttling and 5xx.
    retry_codes: frozenset[str] = RETRYABLE_CODES
    #: botocore's read timeout when ``from_settings`` is given none.
    default_read_timeout = 30.0

    def __init__(
        self,
        client: Any,
        model: str,
        requests_per_minute: float,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        *,
        burst: int | None = None,
        headroom: float = 0.9,
        limiter: Limiter | None = None,
        **retry: Any,
    ) -> None:
        """``client`` is a boto3 ``bedrock-runtime`` client. ``requests_per_minute`` is the
        provider's quota; the bucket runs at ``headroom`` times it (pass ``limiter``, e.g. a
        bucket shared with other clients, to control it fully). ``retry`` goes to
        RemoteClient (backoff_base, backoff_cap, sleep, rng)."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        super().__init__(
            limiter or TokenBucket.for_limit(requests_per_minute, headroom=headroom, burst=burst),
            max_attempts=max_attempts,
            **retry,
        )
        self._client = client
        self.model = model
        self.max_concurrency = int(max_concurrency)

    @classmethod
    def from_settings(
        cls,
        region: str | None = None,
        endpoint_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        connect_timeout_seconds: float = 5.0,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Build the ``bedrock-runtime`` client and the provider (``kwargs`` go to it).

        ``timeout_seconds`` is the read timeout. Credentials left ``None`` come from boto3's
        usual chain (environment, profile, instance role). They go to the boto3 client only;
        the provider keeps no copy.
        """
        read_timeout = cls.default_read_timeout if timeout_seconds is None else timeout_seconds
        session = boto3.session.Session(profile_name=profile_name)
        client = session.client(
            "bedrock-runtime",
            region_name=region,
            endpoint_url=endpoint_url or None,
            aws_access_key_id=aws_access_key_id or None,
            aws_secret_access_key=aws_secret_access_key or None,
            aws_session_token=aws_session_token or None,
            config=client_config(
                kwargs.get("max_concurrency", 4), connect_timeout_seconds, read_timeout
            ),
        )
        return cls(client, **kwargs)

    def invoke(self, body: str) -> tuple[Any, str | None]:
        """One InvokeModel call: the decoded JSON and its request id, or Retryable / Failed."""
        self._count("requests")
        self._started()
        sent = time.monotonic()
        latency = None
        try:
            response = self._client.invoke_model(
                modelId=self.model,
                body=body,
                contentType="application/json",
                accept="application/json",
            )
            payload = json.loads(response["body"].read())
            latency = time.monotonic() - sent
        except botocore.exceptions.ClientError as exc:
            raise self._classify(exc) from None
        except TRANSIENT_ERRORS as exc:
            raise Retryable(self.clip(f"{type(exc).__name__}: {exc}")) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise Failed(self.clip(f"{type(exc).__name__}: {exc}")) from None
        except ValueError as exc:  # the body was not JSON
            raise Failed(self.clip(f"bad_response: {exc}")) from None
        finally:
            self._ended(latency)
        return payload, response.get("ResponseMetadata", {}).get("RequestId")

    def _classify(self, exc: botocore.exceptions.ClientError) -> Exception:
        """Retryable (throttling, 5xx, ``retry_codes``) or Failed (validation, access,
        other 4xx)."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        metadata = exc.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        request_id = metadata.get("RequestId")
        message = error.get("Message") or ""
        shown = code or f"HTTP {status}"
        reason = self.clip(f"{shown}: {message}" if message else shown)
        if code in THROTTLE_CODES or (status == 429 and code not in self.retry_codes):
            return Retryable(reason, throttled=True, request_id=request_id)
        if code in self.retry_codes or (isinstance(status, int) and status >= 500):
            return Retryable(reason, request_id=request_id)
        auth = code in AUTH_CODES or status in (401, 403)
        return Failed(reason, auth=auth, status=status, request_id=request_id)
