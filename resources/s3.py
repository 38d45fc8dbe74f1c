"""S3 client with timeouts, bounded pools and retries, plus a concurrent batch fetcher.

Retries on throttling, 5xx and connection errors come from botocore's ``standard`` retry
mode (exponential backoff with jitter; 403/404 are never retried). A body that breaks
off mid-read is not covered by botocore, so :func:`fetch_objects` retries that itself.
"""

import random
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from dagster_aws.s3 import S3Resource as DagsterS3Resource
from pydantic import Field, PrivateAttr

_STREAM_ERRORS = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ConnectionClosedError,
)


class S3Resource(DagsterS3Resource):
    """dagster-aws's S3Resource with timeouts and a connection pool sized for concurrency."""

    connect_timeout: float = Field(default=5.0, description="Seconds to open a connection.")
    read_timeout: float = Field(default=30.0, description="Seconds to wait for response bytes.")
    max_pool_connections: int = Field(
        default=32, description="HTTP connections kept per client; >= any max_concurrency."
    )

    server_side_encryption: str = Field(
        default="AES256",
        description="ServerSideEncryption sent with every write: 'AES256', 'aws:kms', or '' "
        "for none.",
    )
    sse_kms_key_id: str | None = Field(
        default=None, description="KMS key id or ARN when server_side_encryption is aws:kms."
    )

    _client: Any = PrivateAttr(default=None)

    def get_client(self):
        """One client per resource instance: building one costs ~0.1 s, and it is thread-safe."""
        if self._client is None:
            self._client = self.create_client()
        return self._client

    def create_client(self):
        session = boto3.session.Session(profile_name=self.profile_name)
        client = session.client(
            "s3",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=client_config(
                self.max_attempts,
                self.connect_timeout,
                self.read_timeout,
                self.max_pool_connections,
            ),
        )
        if self.server_side_encryption:
            add_encryption(client, self.server_side_encryption, self.sse_kms_key_id)
        return client


#: Every S3 operation that creates an object.
WRITE_OPERATIONS = ("PutObject", "CreateMultipartUpload", "CopyObject")


def add_encryption(client, algorithm: str, kms_key_id: str | None = None) -> None:
    """Make every write through ``client`` request server-side encryption."""

    def encrypt(params: dict, **_) -> None:
        params.setdefault("ServerSideEncryption", algorithm)
        if algorithm == "aws:kms" and kms_key_id:
            params.setdefault("SSEKMSKeyId", kms_key_id)

    for operation in WRITE_OPERATIONS:
        client.meta.events.register(f"provide-client-params.s3.{operation}", encrypt)


_BUCKET_NAME = re.compile(r"(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_bucket_name(name: str) -> str:
    """Raise a clear error for a name S3 would refuse (3-63 lower-case letters, digits,
    dots, hyphens; starting and ending with a letter or digit)."""
    if not _BUCKET_NAME.fullmatch(name or ""):
        raise ValueError(
            f"invalid bucket name {name!r}: use 3-63 lower-case letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def client_config(
    max_attempts: int = 5,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_pool_connections: int = 32,
) -> Config:
    return Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )


@dataclass
class FetchReport:
    """Per-key outcome of a batch fetch; one failed key never hides the others' bytes."""

    data: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bytes_fetched: int = 0
    seconds: float = 0.0
    retries: int = 0  # retried requests, botocore's and ours

    def metadata(self) -> dict[str, float | int]:
        fetched = len(self.data)
        return {
            "objects_fetched": fetched,
            "objects_failed": len(self.errors),
            "bytes_fetched": self.bytes_fetched,
            "fetch_seconds": round(self.seconds, 3),
            "fetch_retries": self.retries,
        }


def fetch_objects(
    client,
    bucket: str,
    keys: Iterable[str],
    *,
    max_concurrency: int = 8,
    stream_attempts: int = 3,
) -> FetchReport:
    """GET every key with at most ``max_concurrency`` requests in flight."""
    report = FetchReport()
    started = time.perf_counter()

    def one(key: str) -> tuple[str, bytes | None, str | None, int]:
        for attempt in range(stream_attempts):
            try:
                response = client.get_object(Bucket=bucket, Key=key)
                body = response["Body"].read()
                # botocore's own retries (throttling, 5xx, dropped connections) plus ours.
                retried = attempt + response["ResponseMetadata"].get("RetryAttempts", 0)
                return key, body, None, retried
            except _STREAM_ERRORS as exc:
                if attempt == stream_attempts - 1:
                    return key, None, f"{type(exc).__name__}: {exc}", attempt
                time.sleep(min(4.0, 0.25 * 2**attempt) * (0.5 + random.random()))
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                retried = attempt + exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                return key, None, f"{error.get('Code')}: {error.get('Message')}", retried
            except botocore.exceptions.BotoCoreError as exc:
                return key, None, f"{type(exc).__name__}: {exc}", attempt
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(max_workers=max(1, max_concurrency)) as pool:
        for key, body, error, retries in pool.map(one, keys):
            report.retries += retries
            if body is None:
                report.errors[key] = error or "unknown error"
            else:
                report.data[key] = body
                report.bytes_fetched += len(body)
    report.seconds = time.perf_counter() - started
    return report
