"""The S3 batch fetcher against the session SeaweedFS, with faults injected by a botocore
``before-send`` hook (it answers for the server, so each call of it is one request sent)."""

import math
import statistics
import threading
import time
from collections import Counter
from urllib.parse import unquote

import botocore.awsrequest
import botocore.exceptions
import pytest
import urllib3.exceptions

from orchestration.environment import s3_from_env
from resources.memo import MemoStore
from resources.s3 import FetchReport, S3Resource, fetch_objects, iter_fetch
from resources.uploads import UploadsBucket

pytestmark = pytest.mark.integration


class _Raw:
    """A fake response body: whole, cut short of its Content-Length, or breaking mid-read."""

    def __init__(self, body: bytes, fail: bool = False) -> None:
        self.body, self.fail = body, fail

    def stream(self, **_):
        yield self.body

    def read(self, *_, **__) -> bytes:
        if self.fail:
            raise urllib3.exceptions.ProtocolError("Connection broken: injected")
        return self.body

    def close(self) -> None:
        pass


class Faults:
    """Hooks a client: counts the GETs sent per key and injects the queued fault, if any."""

    def __init__(self, client) -> None:
        self.queued: dict[str, list[str]] = {}
        self.sends: Counter = Counter()
        client.meta.events.register("before-send.s3.GetObject", self)

    def __call__(self, request, **_):
        key = unquote(request.url.split("?")[0].split("/", 4)[-1])
        self.sends[key] += 1
        fault = self.queued[key].pop(0) if self.queued.get(key) else None
        if fault is None:
            return None
        if fault == "drop":
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)
        if fault == "unreachable":
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)
        if fault == "truncated":  # IncompleteReadError while reading the body
            headers = {"Content-Length": "100"}
            return botocore.awsrequest.AWSResponse(request.url, 200, headers, _Raw(b"abc"))
        if fault == "broken":  # ResponseStreamingError while reading the body
            headers = {"Content-Length": "100"}
            return botocore.awsrequest.AWSResponse(request.url, 200, headers, _Raw(b"", True))
        status, code = fault.split(":")
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return botocore.awsrequest.AWSResponse(request.url, int(status), {}, _Raw(body))


class Sleeps(list):
    """Stands in for time.sleep: records the backoff delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def bucket(s3_env, s3_client) -> str:
    return s3_env["UPLOADS_BUCKET"]


@pytest.fixture
def client(s3_env):
    """A fetch client of its own (botocore retries off), so hooks stay within one test."""
    return s3_from_env().get_fetch_client()


def put(s3_client, bucket: str, count: int, prefix: str = "k") -> dict[str, bytes]:
    objects = {f"{prefix}/{i:03d}": f"object {i} ".encode() * (i + 1) for i in range(count)}
    for key, body in objects.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return objects


def test_missing_key_is_reported_at_once_and_the_others_succeed(s3_client, bucket, client):
    objects = put(s3_client, bucket, 5)
    faults, sleeps = Faults(client), Sleeps()
    report = fetch_objects(client, bucket, [*objects, "k/missing"], sleep=sleeps)
    assert report.data == objects
    assert list(report.errors) == ["k/missing"]
    reason = report.errors["k/missing"]
    assert reason.startswith("NoSuchKey: ")
    assert f"s3://{bucket}/k/missing" in reason and "HTTP 404 (not retryable)" in reason
    assert faults.sends["k/missing"] == 1 and sleeps == []  # neither we nor botocore retried
    meta = report.metadata()
    assert (meta["objects_fetched"], meta["objects_failed"], meta["fetch_retries"]) == (5, 1, 0)
    assert meta["bytes_fetched"] == sum(map(len, objects.values()))


@pytest.mark.parametrize(
    ("fault", "reported_as"),
    [
        ("503:SlowDown", "SlowDown: "),
        ("503:ServiceUnavailable", "ServiceUnavailable: "),
        ("500:InternalError", "InternalError: "),
        ("502:BadGateway", "BadGateway: "),
        ("504:GatewayTimeout", "GatewayTimeout: "),
        ("429:TooManyRequests", "TooManyRequests: "),
        ("400:Throttling", "Throttling: "),
        ("400:RequestLimitExceeded", "RequestLimitExceeded: "),
        ("drop", "ConnectionClosedError: "),
        ("unreachable", "EndpointConnectionError: "),
        ("truncated", "IncompleteReadError: "),
        ("broken", "ResponseStreamingError: "),
    ],
)
def test_transient_error_is_retried_and_counted(s3_client, bucket, client, fault, reported_as):
    objects = put(s3_client, bucket, 3)
    faults, sleeps = Faults(client), Sleeps()
    faults.queued["k/001"] = [fault, fault]
    report = fetch_objects(client, bucket, objects, sleep=sleeps)
    assert report.data == objects and report.errors == {}
    assert faults.sends["k/001"] == 3  # two failures, then the real object
    assert report.retries == report.metadata()["fetch_retries"] == len(sleeps) == 2
    # With a single attempt the same fault is what gets reported.
    faults.queued["k/001"] = [fault]
    report = fetch_objects(client, bucket, ["k/001"], max_attempts=1, sleep=sleeps)
    assert report.errors["k/001"].startswith(reported_as), report.errors
    assert "after 1 attempt: " in report.errors["k/001"]


@pytest.mark.parametrize(
    "fault", ["403:AccessDenied", "404:NoSuchKey", "400:InvalidArgument", "409:Conflict"]
)
def test_client_error_is_not_retried(s3_client, bucket, client, fault):
    objects = put(s3_client, bucket, 3)
    faults, sleeps = Faults(client), Sleeps()
    faults.queued["k/001"] = [fault]
    report = fetch_objects(client, bucket, objects, sleep=sleeps)
    status, code = fault.split(":")
    assert report.errors["k/001"].startswith(f"{code}: GET s3://{bucket}/k/001 failed")
    assert f"HTTP {status} (not retryable)" in report.errors["k/001"]
    assert report.data == {k: v for k, v in objects.items() if k != "k/001"}
    assert faults.sends["k/001"] == 1 and sleeps == [] and report.retries == 0


def test_wrong_credentials_are_refused_once_per_key_without_leaking(s3_env, s3_client, bucket):
    objects = put(s3_client, bucket, 3)
    secret = "wrong-secret-" + "x" * 20
    wrong = S3Resource(endpoint_url=s3_env["S3_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=secret).get_fetch_client()  # fmt: skip
    faults, sleeps = Faults(wrong), Sleeps()
    report = fetch_objects(wrong, bucket, objects, sleep=sleeps)
    assert report.data == {} and set(report.errors) == set(objects)
    for key, reason in report.errors.items():
        assert "HTTP 403 (not retryable)" in reason and key in reason
        assert secret not in reason and s3_env["AWS_SECRET_ACCESS_KEY"] not in reason
    assert faults.sends == Counter(dict.fromkeys(objects, 1)) and sleeps == []


def test_retries_stop_after_max_attempts_with_one_request_each(s3_client, bucket, client):
    objects = put(s3_client, bucket, 2)
    faults, sleeps = Faults(client), Sleeps()
    faults.queued["k/000"] = ["503:SlowDown"] * 10
    report = fetch_objects(client, bucket, objects, max_attempts=3, sleep=sleeps)
    reason = report.errors["k/000"]
    assert reason.startswith(f"SlowDown: GET s3://{bucket}/k/000 failed with HTTP 503")
    assert "after 3 attempts" in reason
    # Exactly max_attempts requests: botocore did not retry underneath us.
    assert faults.sends["k/000"] == 3 and report.retries == len(sleeps) == 2
    assert report.data == {"k/001": objects["k/001"]}


def test_backoff_grows_exponentially_with_full_jitter(s3_client, bucket, client):
    objects = put(s3_client, bucket, 20)
    faults, sleeps = Faults(client), Sleeps()
    for key in objects:
        faults.queued[key] = ["503:SlowDown"] * 4
    # One request at a time, so the delays come key by key: 4 retries each.
    report = fetch_objects(client, bucket, objects, max_concurrency=1, max_attempts=5,
                           base_delay=1.0, max_delay=6.0, sleep=sleeps)  # fmt: skip
    assert report.data == objects and report.retries == len(sleeps) == 80
    by_retry = [sleeps[n::4] for n in range(4)]
    for delays, cap in zip(by_retry, [1.0, 2.0, 4.0, 6.0], strict=True):
        assert all(0 <= d <= cap for d in delays), (cap, delays)
        assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
        # Full jitter: uniform on [0, cap], so the mean is cap / 2 (20 samples: +-0.3 cap
        # is more than 4 standard deviations).
        assert abs(statistics.mean(delays) - cap / 2) < 0.3 * cap
    means = [statistics.mean(d) for d in by_retry]
    assert means[0] < means[1] < means[2]


def test_batches_and_merged_metrics(s3_client, bucket, client):
    objects = put(s3_client, bucket, 23)
    more = put(s3_client, bucket, 5, prefix="m")
    first = fetch_objects(client, bucket, [*objects, *list(objects)[:3]], batch_size=10)
    assert first.data == objects  # duplicate keys fetched once
    meta = first.metadata()
    assert (meta["fetch_batches"], meta["fetch_avg_batch_size"]) == (3, round(23 / 3, 2))
    assert meta["objects_fetched"] == 23 and meta["fetch_seconds"] > 0
    assert 0 < meta["fetch_avg_seconds"] <= meta["fetch_seconds"]
    second = fetch_objects(client, bucket, more, batch_size=10)
    total = first + second
    assert total.data == {**objects, **more} and first.batches == 3  # + leaves both alone
    meta = total.metadata()
    assert (meta["fetch_batches"], meta["fetch_avg_batch_size"]) == (4, 7.0)
    assert meta["fetch_seconds"] == round(first.seconds + second.seconds, 3)
    merged = FetchReport()
    merged += first
    assert merged.merge(second).metadata() == meta
    assert set(FetchReport().metadata()) == set(meta)  # an empty report has every key


# Two batches are queued at a time, so batches smaller than max_concurrency still fill it.
@pytest.mark.parametrize(("batch_size", "concurrency"), [(10, 4), (3, 5), (10, 1)])
def test_requests_in_flight_never_exceed_max_concurrency(
    s3_client, bucket, client, batch_size, concurrency
):
    objects = put(s3_client, bucket, 30)
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow_request(**_):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.03)
        with lock:
            state["now"] -= 1

    client.meta.events.register("before-send.s3.GetObject", slow_request)
    report = fetch_objects(
        client, bucket, objects, batch_size=batch_size, max_concurrency=concurrency
    )
    assert report.data == objects
    assert state["peak"] == report.metadata()["fetch_max_concurrency"] == concurrency
    assert report.batches == math.ceil(30 / batch_size)


def test_a_client_that_retries_itself_or_has_too_small_a_pool_is_refused(s3_env, bucket):
    retrying = s3_from_env().get_client()
    with pytest.raises(ValueError, match="botocore retries off"):
        fetch_objects(retrying, bucket, ["k/000"])
    small = S3Resource(endpoint_url=s3_env["S3_ENDPOINT_URL"],
                       max_pool_connections=2).get_fetch_client()  # fmt: skip
    assert small.meta.config.retries["total_max_attempts"] == 1
    with pytest.raises(ValueError, match="connection pool"):
        fetch_objects(small, bucket, ["k/000"], max_concurrency=3)


def test_resources_pass_their_fetch_settings_through(s3_env, s3_client, bucket):
    objects = put(s3_client, bucket, 9)
    uploads = UploadsBucket(s3=s3_from_env(), bucket=bucket, fetch_batch_size=4,
                            fetch_concurrency=2)  # fmt: skip
    report = uploads.fetch(list(objects))
    assert report.data == objects
    assert (report.batches, report.max_concurrency) == (3, 2)

    memo = MemoStore(s3=s3_from_env(), bucket=s3_env["PIPELINE_BUCKET"], fetch_batch_size=2,
                     fetch_concurrency=1)  # fmt: skip
    memo.put_many("ns", {"aa01": b"one", "bb02": b"two", "cc03": b"three"})
    client = memo.s3.get_fetch_client()
    faults = Faults(client)
    faults.queued[memo.entry_key("ns", "bb02")] = ["503:SlowDown"]
    found, errors = memo.get_many("ns", ["aa01", "bb02", "cc03", "dd04"])
    assert found == {"aa01": b"one", "bb02": b"two", "cc03": b"three"}
    assert errors == {}  # dd04 is simply not there
    assert faults.sends[memo.entry_key("ns", "bb02")] == 2  # retried on the fetch client


def test_iter_fetch_hands_over_batches_in_order_and_stops_with_its_caller(
    s3_client, bucket, client
):
    objects = put(s3_client, bucket, 25)
    reports = list(iter_fetch(client, bucket, objects, batch_size=10, max_concurrency=3))
    assert [list(r.data) for r in reports] == [list(objects)[i : i + 10] for i in (0, 10, 20)]
    faults = Faults(client)
    batches = iter_fetch(client, bucket, objects, batch_size=5, max_concurrency=2)
    assert list(next(batches).data) == list(objects)[:5]
    batches.close()  # the batches still queued are dropped, not fetched
    assert sum(faults.sends.values()) <= 10
