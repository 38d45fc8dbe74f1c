"""S3 client with timeouts, bounded pools and retries, plus a concurrent batch fetcher.

Ordinary calls are retried by botocore's ``standard`` retry mode (throttling, 5xx and
connection errors, exponential backoff with jitter; 403/404 never). The batch fetcher's GETs
are not: :func:`fetch_objects` retries by itself on a client whose botocore retries are off
(:meth:`S3Resource.get_fetch_client`). One layer only, because botocore's attempts times
ours would multiply (6 x 4); ours, not botocore's, because botocore cannot retry a body that
breaks off mid-read, its retries go uncounted when a request ends in a connection error,
and its sleeps cannot be injected in tests.
"""

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, NamedTuple, Self

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
import dagster as dg
import tenacity
from botocore.config import Config
from dagster_aws.s3 import S3Resource as DagsterS3Resource
from pydantic import Field, PrivateAttr


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
    _fetch_client: Any = PrivateAttr(default=None)

    def get_client(self):
        """One client per resource instance: building one costs ~0.1 s, and it is thread-safe."""
        if self._client is None:
            self._client = self.create_client()
        return self._client

    def get_fetch_client(self):
        """The client for :func:`fetch_objects`: this resource's settings and whatever
        ``create_client`` adds (a subclass's hooks too), with botocore's retries off because
        the fetcher retries by itself. One per resource instance, like :meth:`get_client`."""
        if self._fetch_client is None:
            # Config's max_attempts counts retries, so 0 means one attempt per request.
            self._fetch_client = self.model_copy(update={"max_attempts": 0}).create_client()
        return self._fetch_client

    def create_client(self):
        session = boto3.session.Session(
            botocore_session=_botocore_session(), profile_name=self.profile_name
        )
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


#: botocore's data files (service models, endpoints) parsed once per process: every new
#: session would otherwise parse S3's model again, 60 ms of each client's 67 ms, and a run
#: builds clients in every step (resources and IO managers each own theirs).
_DATA_LOADER = botocore.loaders.create_loader()


def _botocore_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register_component("data_loader", _DATA_LOADER)
    return session


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


def put_objects(
    client,
    bucket: str,
    objects: dict[str, bytes],
    content_type: str | None = None,
    max_concurrency: int = 16,
) -> int:
    """PUT ``objects`` (key -> body) concurrently; returns how many were written."""
    extra = {"ContentType": content_type} if content_type else {}

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1], **extra)

    with ThreadPoolExecutor(max_workers=max(1, min(max_concurrency, len(objects)))) as pool:
        list(pool.map(put, objects.items()))
    return len(objects)


class BackgroundWrites:
    """Writes run in order on one background thread while the caller computes its next
    chunk, so a step's PUTs overlap its compute instead of following it (120 phone photos:
    about a second of memo and working-copy writes in each image step). Once a write fails,
    none after it runs (a memo entry is never stored after the object it stands for failed
    to be). At most ``pending`` submitted writes wait: their bytes are held until written.
    :meth:`wait` returns when every write is done and raises the first failure (after the
    client's retries), as the write itself would have; :meth:`submit` raises it too."""

    def __init__(self, pending: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-writes")
        self._futures: deque[Future] = deque()
        self._pending = pending
        self._failed = False

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        while self._futures and (self._futures[0].done() or len(self._futures) >= self._pending):
            self._futures.popleft().result()
        self._futures.append(self._pool.submit(self._in_order, write, args))

    def _in_order(self, write: Callable[..., Any], args: tuple) -> None:
        if self._failed:
            raise RuntimeError("not written: an earlier write of this step failed")
        try:
            write(*args)
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        while self._futures:
            self._futures.popleft().result()


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
    """``max_attempts`` is botocore's retries after the first attempt: 0 for a fetch client."""
    return Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )


# --- the batch fetcher ---------------------------------------------------------------------

#: Error codes and HTTP statuses worth another attempt: throttling and server-side failures.
#: Everything else (NoSuchKey/404, AccessDenied/403, other 4xx) fails the same way again.
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "InternalError",
        "ServiceUnavailable",
    }
)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Transport failures: no answer, or a body that broke off. SSLError (a bad certificate) is a
#: ConnectionError too, but not transient, so it is not listed.
RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError (body read failed)
    # and any other error botocore wraps from the HTTP layer.
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,  # body shorter than its Content-Length
)


@dataclass
class FetchReport:
    """Per-key outcome of a fetch, one failed key never hides the others' bytes, plus
    metrics. Reports add up (``a + b``, ``a += b``, :meth:`merge`) when a caller fetches in
    several chunks."""

    data: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # key -> "<Code>: what happened"
    bytes_fetched: int = 0
    seconds: float = 0.0  # wall time spent waiting for the bytes
    object_seconds: float = 0.0  # summed per object: first request to outcome, retries included
    batches: int = 0
    retries: int = 0  # requests sent again after a retryable error
    max_concurrency: int = 0  # peak GET requests in flight

    @property
    def objects(self) -> int:
        return len(self.data) + len(self.errors)

    def __iadd__(self, other: "FetchReport") -> Self:
        self.data.update(other.data)
        self.errors.update(other.errors)
        self.bytes_fetched += other.bytes_fetched
        self.seconds += other.seconds
        self.object_seconds += other.object_seconds
        self.batches += other.batches
        self.retries += other.retries
        self.max_concurrency = max(self.max_concurrency, other.max_concurrency)
        return self

    def without_bytes(self) -> "FetchReport":
        """The same report with empty bodies: for totals kept across chunks, so the
        metrics add up without holding every object in memory."""
        return replace(self, data=dict.fromkeys(self.data, b""), errors=dict(self.errors))

    def __add__(self, other: "FetchReport") -> "FetchReport":
        return FetchReport().merge(self).merge(other)

    def merge(self, other: "FetchReport") -> Self:
        """Add ``other`` into this report (chunks fetched one after another) and return it."""
        self += other
        return self

    def metadata(self) -> dict[str, float | int]:
        """Dagster asset metadata. The averages are recomputed from totals, so merge reports
        before calling this rather than summing the metadata of several."""
        objects = self.objects
        return {
            "objects_fetched": len(self.data),
            "objects_failed": len(self.errors),
            "bytes_fetched": self.bytes_fetched,
            "fetch_seconds": round(self.seconds, 3),
            "fetch_avg_seconds": round(self.object_seconds / objects, 4) if objects else 0.0,
            "fetch_batches": self.batches,
            "fetch_avg_batch_size": round(objects / self.batches, 2) if self.batches else 0.0,
            "fetch_retries": self.retries,
            "fetch_max_concurrency": self.max_concurrency,
        }


def fetch_objects(client, bucket: str, keys: Iterable[str], **options: Any) -> FetchReport:
    """GET every key; ``options`` and behaviour are :func:`iter_fetch`'s, whose batch
    reports this merges into one."""
    started = time.perf_counter()
    report = FetchReport()
    for batch in iter_fetch(client, bucket, keys, **options):
        report += batch
    report.seconds = time.perf_counter() - started
    return report


def iter_fetch(
    client,
    bucket: str,
    keys: Iterable[str],
    *,
    batch_size: int = 10,
    max_concurrency: int = 5,
    max_attempts: int = 4,
    base_delay: float = 1.0,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[FetchReport]:
    """GET the (de-duplicated) keys in batches of ``batch_size``, one report per batch.

    Two batches are queued at a time and the next one is queued when one is handed over: the
    workers go from one batch straight to the next (no wait for each batch's slowest
    request), the next batch is fetched while the caller handles this one, and at most two
    batches of bytes are held. ``max_concurrency`` counts GET requests in flight (what the
    endpoint and the connection pool see), not batches.

    A key is tried up to ``max_attempts`` times while its error is retryable (throttling,
    5xx, connection and body-read errors), sleeping with exponential backoff and full jitter,
    a uniform delay in ``[0, min(max_delay, base_delay * 2**retry)]`` (at most 1, 2, 4 s by
    default); a backoff sleep keeps its worker, so a throttled endpoint gets fewer requests.
    Errors are reported per key, starting with the error code, never raised.

    ``client`` must have botocore's retries off (:meth:`S3Resource.get_fetch_client`) and a
    connection pool of at least ``max_concurrency``.
    """
    if min(batch_size, max_concurrency, max_attempts) < 1:
        raise ValueError("batch_size, max_concurrency and max_attempts must be >= 1")
    _check_client(client, max_concurrency)
    keys = list(dict.fromkeys(keys))
    in_flight = _InFlight()

    def fetch(key: str) -> _Outcome:
        started = time.perf_counter()
        attempts = 0

        def get() -> bytes:
            nonlocal attempts
            attempts += 1
            try:
                with in_flight:
                    response = client.get_object(Bucket=bucket, Key=key)
                    try:
                        return response["Body"].read()
                    finally:
                        response["Body"].close()
            except botocore.exceptions.ClientError as exc:
                code, status, message = _client_error(exc)
                retryable = code in RETRYABLE_CODES or status in RETRYABLE_STATUSES
                failure = f"{code}: GET s3://{bucket}/{key} failed with HTTP {status}"
                raise _GetFailed(failure, message, retryable) from None
            except RETRYABLE_EXCEPTIONS as exc:
                failure = f"{type(exc).__name__}: GET s3://{bucket}/{key} failed"
                raise _GetFailed(failure, str(exc), retryable=True) from None
            except botocore.exceptions.BotoCoreError as exc:  # e.g. no credentials
                failure = f"{type(exc).__name__}: GET s3://{bucket}/{key} failed"
                raise _GetFailed(failure, str(exc), retryable=False) from None

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            stop=tenacity.stop_after_attempt(max_attempts),
            # Full jitter: uniform in [0, min(max_delay, base_delay * 2**retry)].
            wait=tenacity.wait_random_exponential(multiplier=base_delay, max=max_delay),
            sleep=sleep,
            reraise=True,
        )
        try:
            body = retrying(get)
        except _GetFailed as failed:
            plural = "s" if attempts > 1 else ""
            tries = f"after {attempts} attempt{plural}" if failed.retryable else "(not retryable)"
            error = f"{failed.failure} {tries}: {failed.message}"
            return _Outcome(key, None, error, attempts - 1, time.perf_counter() - started)
        return _Outcome(key, body, None, attempts - 1, time.perf_counter() - started)

    if not keys:
        return
    batches = (keys[i : i + batch_size] for i in range(0, len(keys), batch_size))
    pool = ThreadPoolExecutor(min(max_concurrency, len(keys)), thread_name_prefix="s3-fetch")
    queued = deque([pool.submit(fetch, key) for key in batch] for batch in islice(batches, 2))
    try:
        while queued:
            yield _batch_report(queued.popleft(), in_flight)
            if batch := next(batches, None):
                queued.append([pool.submit(fetch, key) for key in batch])
    finally:  # also when the caller stops early: drop what is queued
        pool.shutdown(cancel_futures=True)


def _batch_report(futures: "list[Future[_Outcome]]", in_flight: "_InFlight") -> FetchReport:
    waited = time.perf_counter()
    outcomes = [future.result() for future in futures]
    report = FetchReport(seconds=time.perf_counter() - waited, batches=1)
    for outcome in outcomes:
        if outcome.body is not None:
            report.data[outcome.key] = outcome.body
            report.bytes_fetched += len(outcome.body)
        else:
            report.errors[outcome.key] = outcome.error or "unknown error"
        report.retries += outcome.retries
        report.object_seconds += outcome.seconds
    report.max_concurrency = in_flight.take_peak()
    return report


class _GetFailed(Exception):
    """One GET's failure: what failed, the service's message, whether to try again."""

    def __init__(self, failure: str, message: str, retryable: bool) -> None:
        super().__init__(failure)
        self.failure, self.message, self.retryable = failure, message, retryable


class _Outcome(NamedTuple):
    key: str
    body: bytes | None
    error: str | None
    retries: int
    seconds: float


class _InFlight:
    """Counts requests in flight and remembers the peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *_) -> None:
        with self._lock:
            self.now -= 1

    def take_peak(self) -> int:
        """The peak since the last call."""
        with self._lock:
            peak, self.peak = self.peak, self.now
        return peak


def _client_error(exc: botocore.exceptions.ClientError) -> tuple[str, int, str]:
    """Code, HTTP status and message; only these, so nothing else of the response (request
    ids, signing details) ends up in a report."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    error = exc.response.get("Error", {})
    return error.get("Code") or str(status), status, error.get("Message") or "no message"


def _check_client(client, max_concurrency: int) -> None:
    config = client.meta.config
    if (config.retries or {}).get("total_max_attempts") != 1:
        raise ValueError(
            "fetch_objects retries by itself: pass a client with botocore retries off "
            "(S3Resource.get_fetch_client(), or client_config(max_attempts=0))"
        )
    if config.max_pool_connections < max_concurrency:
        # urllib3 would open and throw away a connection per request beyond the pool.
        raise ValueError(
            f"max_concurrency {max_concurrency} exceeds the client's connection pool "
            f"({config.max_pool_connections}); raise max_pool_connections"
        )


class FetchingBucket(dg.ConfigurableResource):
    """A bucket whose objects are read through the batch fetcher: the shared part of the
    uploads and memo resources (connection, bucket, fetch settings)."""

    s3: dg.ResourceDependency[S3Resource]
    bucket: str = Field(description="Bucket name.")
    fetch_batch_size: int = Field(
        default=10,
        description="Objects per fetch batch, the unit of the fetch metrics; two batches "
        "are queued at a time.",
    )
    fetch_concurrency: int = Field(
        default=5,
        description="GET requests in flight when fetching (at most the S3 resource's "
        "max_pool_connections).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_bucket_name(self.bucket)

    def fetch(self, keys: list[str]) -> FetchReport:
        """GET these keys with this resource's batch size and concurrency."""
        return fetch_objects(
            self.s3.get_fetch_client(),
            self.bucket,
            keys,
            batch_size=self.fetch_batch_size,
            max_concurrency=self.fetch_concurrency,
        )
