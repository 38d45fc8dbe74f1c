"""The S3-shared token bucket against the session SeaweedFS: the rate bound across processes,
round-robin fairness between tenants, expiry of crashed waiters, and compare-and-swap under
contention.

Rates are scaled up (thousands a minute) so a few seconds see hundreds of acquires. The only
timing asserted tightly is the rate bound, which holds by construction; fairness and expiry
are asserted with generous margins for a loaded two-core machine.
"""

import contextlib
import json
import multiprocessing
import queue
import threading
import time
import traceback
import uuid

import boto3
import botocore.exceptions
import pytest

from resources.s3 import add_encryption, client_config
from resources.shared_ratelimit import SharedLimiterError, SharedTokenBucket

pytestmark = pytest.mark.integration

#: Acquire times are stamped just after acquire() returns; a stamp delayed by the scheduler
#: can move a token into a later window. Windows are checked against the bound for a window
#: this much longer (a few tokens at the test rates).
STAMP_SLACK = 0.1


@pytest.fixture(scope="module")
def racing_creates_warmed_up(seaweed) -> None:
    """SeaweedFS answers the first two racing conditional creates after it starts in 5-8 s
    (later ones in 0.2 s, the loser's 412 in 1 s): race two here, not in a timed test."""
    conn = connection(seaweed)
    clients = [make_client(conn), make_client(conn)]
    name = f"warm-up-{uuid.uuid4().hex[:10]}"
    clients[0].create_bucket(Bucket=name)

    def create(client) -> None:
        with contextlib.suppress(botocore.exceptions.ClientError):  # the loser's 412
            client.put_object(Bucket=name, Key="race", Body=b"", IfNoneMatch="*")

    threads = [threading.Thread(target=create, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


@pytest.fixture
def bucket(s3_env, s3_client, racing_creates_warmed_up) -> str:
    """The test's pipeline bucket, written to once: SeaweedFS answers a bucket's first write
    only after allocating its volumes (seconds), which would skew the first acquires."""
    name = s3_env["PIPELINE_BUCKET"]
    s3_client.put_object(Bucket=name, Key="warm-up", Body=b"")
    return name


def make_client(conn: dict[str, str]):
    """A client of its own, with the project's encryption hook, like S3Resource's."""
    client = boto3.client(
        "s3",
        endpoint_url=conn["endpoint_url"],
        aws_access_key_id=conn["access_key"],
        aws_secret_access_key=conn["secret_key"],
        region_name="us-east-1",
        config=client_config(),
    )
    add_encryption(client, "AES256")
    return client


def connection(seaweed) -> dict[str, str]:
    return {
        "endpoint_url": seaweed.endpoint_url,
        "access_key": seaweed.access_key,
        "secret_key": seaweed.secret_key,
    }


def read_state(client, bucket: str, key: str) -> dict:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def max_in_any_window(times: list[float], seconds: float) -> int:
    """The most stamps in any closed window of ``seconds`` (one starting at a stamp is the
    worst)."""
    times = sorted(times)
    best, end = 0, 0
    for start, t in enumerate(times):
        end = max(end, start)
        while end < len(times) and times[end] <= t + seconds:
            end += 1
        best = max(best, end - start)
    return best


def assert_rate_bound(times: list[float], limiter: SharedTokenBucket) -> None:
    span = max(times) - min(times)
    for seconds in (0.25, 0.5, 1.0, 2.0, 4.0, span):
        count = max_in_any_window(times, seconds)
        bound = limiter.max_in_window(seconds + STAMP_SLACK)
        assert count <= bound, f"{count} acquires within {seconds:.2f} s, bound {bound:.1f}"


# --- separate processes ----------------------------------------------------------------------


def _limiter_process(conn: dict, job: dict, barrier, results) -> None:
    """One pipeline run in its own process: acquire as fast as allowed, stamp each token."""
    try:
        client = make_client(conn)
        # A client's first request loads botocore's models: half a second of CPU, which
        # would hand the other processes a head start.
        client.head_bucket(Bucket=job["bucket"])
        limiter = SharedTokenBucket.for_limit(
            job["limit"],
            client=client,
            bucket=job["bucket"],
            key=job["key"],
            tenant=job["tenant"],
            block_seconds=job["block_seconds"],
        )
        barrier.wait(timeout=120)  # all processes are up: start together
        started = time.time() + job.get("delay", 0.0)
        time.sleep(max(0.0, started - time.time()))
        stop = started + job.get("seconds", float("inf"))
        count = job.get("count", float("inf"))
        times: list[float] = []
        while len(times) < count and time.time() < stop:
            limiter.acquire()
            times.append(time.time())
        results.put(
            {"job": job, "started": started, "times": times, **limiter.counters.as_metadata()}
        )
    except BaseException:
        results.put({"job": job, "error": traceback.format_exc()})


def run_processes(seaweed, jobs: list[dict], timeout: float = 120.0) -> list[dict]:
    """Run each job in a process of its own; their results in job order.

    The processes fork from a forkserver, a fresh single-threaded interpreter (not this
    one, with pytest's threads and S3 clients), which imports this module once: spawning
    each process cost two seconds of imports (dagster, via resources.s3), on two cores.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    barrier = ctx.Barrier(len(jobs))
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_limiter_process, args=(connection(seaweed), job, barrier, results))
        for job in jobs
    ]
    for process in processes:
        process.start()
    out: list[dict] = []
    give_up = time.monotonic() + timeout
    try:
        while len(out) < len(jobs):
            try:
                out.append(results.get(timeout=1.0))
            except queue.Empty:
                exits = [p.exitcode for p in processes]
                # A process that died without a word (killed, crashed on import) fails fast.
                assert None in exits or not results.empty(), f"workers exited: {exits}"
                assert time.monotonic() < give_up, f"workers still running after {timeout} s"
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:  # only the processes started here, by their handles
            if process.is_alive():
                process.kill()
                process.join()
    errors = [r["error"] for r in out if "error" in r]
    assert not errors, errors[0]
    return sorted(out, key=lambda r: jobs.index(r["job"]))


def summary(results: list[dict]) -> list[dict]:
    """Per process, for failure messages: tokens, first and last relative to the start, and
    the S3 counters."""
    return [
        {
            "tenant": r["job"]["tenant"],
            "tokens": len(r["times"]),
            "first": round(r["times"][0] - r["started"], 3) if r["times"] else None,
            "last": round(r["times"][-1] - r["started"], 3) if r["times"] else None,
        }
        | {k.removeprefix("shared_limiter_"): v for k, v in r.items() if k.startswith("shared")}
        for r in results
    ]


#: A 500-a-minute quota scaled up six times, in quarter-second blocks: 45 tokens a second.
LIMIT = 3000
BLOCK_SECONDS = 0.25


def reference_limiter(s3_client, bucket: str, key: str) -> SharedTokenBucket:
    """The limiter the processes build, for its sizes and bound (it makes no request)."""
    return SharedTokenBucket.for_limit(
        LIMIT, client=s3_client, bucket=bucket, key=key, tenant="ref", block_seconds=0.25
    )


def test_processes_sharing_a_key_stay_under_the_limit_in_every_window(seaweed, bucket, s3_client):
    key = "limits/provider.json"
    seconds = 6.0
    jobs = [
        {"tenant": f"store-{i}", "limit": LIMIT, "block_seconds": BLOCK_SECONDS}
        | {"bucket": bucket, "key": key, "seconds": seconds}
        for i in range(2)
    ]
    results = run_processes(seaweed, jobs)

    limiter = reference_limiter(s3_client, bucket, key)
    assert limiter.rate_per_minute == LIMIT * 0.9
    assert limiter.max_in_window(60) <= LIMIT  # a whole minute stays within the quota
    times = [t for r in results for t in r["times"]]
    assert_rate_bound(times, limiter)
    # The processes were not just idle: most of the rate was used, and shared.
    assert len(times) >= 0.5 * limiter.rate_per_minute / 60 * seconds
    for r in results:
        assert len(r["times"]) >= 0.25 * len(times), summary(results)
    # Few S3 requests per block: blocks, not single tokens, go through S3.
    blocks = sum(r["shared_limiter_blocks"] for r in results)
    requests = sum(r["shared_limiter_gets"] + r["shared_limiter_puts"] for r in results)
    assert blocks * limiter.block >= len(times)
    assert requests <= 8 * blocks + 10, (requests, blocks)


def test_a_small_tenant_is_served_in_turn_not_after_a_big_one(seaweed, bucket, s3_client):
    key = "limits/provider.json"
    common = {"limit": LIMIT, "block_seconds": BLOCK_SECONDS, "bucket": bucket, "key": key}
    # Two runs of a big store (50,000 images: they never run out) and, 1.5 s later, a small
    # store with three blocks' worth.
    limiter = reference_limiter(s3_client, bucket, key)
    few = 3 * limiter.block
    jobs = [
        {"tenant": "big-store", "seconds": 6.0, "run": 0} | common,
        {"tenant": "big-store", "seconds": 6.0, "run": 1} | common,
        {"tenant": "small-store", "delay": 1.5, "count": few} | common,
    ]
    big_a, big_b, small = run_processes(seaweed, jobs)

    big = sorted(big_a["times"] + big_b["times"])
    assert_rate_bound(big + small["times"], limiter)
    assert len(small["times"]) == few
    took = small["times"][-1] - small["started"]
    # Its fair share is half the rate (two tenants take turns): 0.73 s here. Allow three
    # times that plus a second for start-up and polling, far below waiting for the big one.
    fair_share = few / (limiter.rate_per_minute / 60 / 2)
    assert took <= 3 * fair_share + 1.0, (took, fair_share)
    assert big[-1] > small["times"][-1] + 1.0  # the big store was still being served
    # Meanwhile the big store took turns with it, not the whole rate.
    during = [t for t in big if small["started"] <= t <= small["times"][-1]]
    assert len(during) <= 2 * few + 2 * limiter.block, len(during)


# --- in this process -------------------------------------------------------------------------


def seed_state(client, bucket: str, key: str, **fields) -> None:
    now = time.time()
    state = {
        "v": 1,
        "seq": 1,
        "rate_per_minute": 600.0,
        "capacity": 10,
        "tokens": 10.0,
        "updated": now,
        "last": "someone-else",
        "waiting": {},
    } | fields
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(state).encode())


def test_a_crashed_waiting_tenant_expires_and_stops_blocking(seaweed, bucket, s3_client):
    key = "limits/crash.json"
    now = time.time()
    # "crashed" joined the queue first and renewed its heartbeat just now, then died: it is
    # next in line until its entry expires. "long-gone" expired long ago.
    seed_state(
        s3_client,
        bucket,
        key,
        waiting={
            "crashed": {"since": now - 1.0, "seen": now},
            "long-gone": {"since": now - 100.0, "seen": now - 100.0},
        },
    )
    ttl = 2.0
    limiter = SharedTokenBucket(
        make_client(connection(seaweed)), bucket, key, 600, "alive", block=5, tenant_ttl=ttl
    )
    waited = limiter.acquire()
    assert 1.0 <= waited <= ttl + 6.0, waited  # blocked until the entry expired, no longer
    state = read_state(s3_client, bucket, key)
    assert state["waiting"] == {}  # both dead entries dropped
    assert state["last"] == "alive"


def test_an_expired_entry_does_not_block_at_all(seaweed, bucket, s3_client):
    key = "limits/expired.json"
    long_ago = time.time() - 60.0
    seed_state(s3_client, bucket, key, waiting={"gone": {"since": long_ago - 5, "seen": long_ago}})
    limiter = SharedTokenBucket(make_client(connection(seaweed)), bucket, key, 600, "alive")
    assert limiter.acquire() < 5.0  # S3 round trips only, not the 10 s TTL
    assert read_state(s3_client, bucket, key)["waiting"] == {}


def test_an_interrupted_acquire_leaves_the_queue(seaweed, bucket, s3_client):
    key = "limits/interrupted.json"
    now = time.time()
    seed_state(s3_client, bucket, key, waiting={"first": {"since": now - 1, "seen": now}})

    class Cancelled(BaseException):
        pass

    def cancelled(_seconds: float) -> None:  # the run is terminated while it waits
        raise Cancelled

    limiter = SharedTokenBucket(
        make_client(connection(seaweed)), bucket, key, 600, "quitter", sleep=cancelled
    )
    with pytest.raises(Cancelled):
        limiter.acquire()
    assert set(read_state(s3_client, bucket, key)["waiting"]) == {"first"}


def test_a_lost_race_is_retried_without_clobbering_the_winner(seaweed, bucket, s3_client):
    key = "limits/race.json"
    client = make_client(connection(seaweed))
    limiter = SharedTokenBucket(client, bucket, key, 60, "ours", block=1, capacity=20)
    limiter.acquire()  # creates the state, full, and takes a block of one
    assert read_state(s3_client, bucket, key)["seq"] == 1

    def rival_writes_first(params, **_):
        """Just before our conditional PUT goes out, another run takes 5 tokens."""
        if params.get("IfMatch") not in (None, "*") and not raced:
            raced.append(True)
            response = s3_client.get_object(Bucket=bucket, Key=key)
            state = json.loads(response["Body"].read())
            state.update(seq=state["seq"] + 1, tokens=state["tokens"] - 5, last="rival")
            s3_client.put_object(
                Bucket=bucket, Key=key, Body=json.dumps(state), IfMatch=response["ETag"]
            )

    raced: list[bool] = []
    client.meta.events.register("provide-client-params.s3.PutObject", rival_writes_first)
    limiter.acquire()

    assert raced
    assert limiter.counters.conflicts == 1
    state = read_state(s3_client, bucket, key)
    assert state["seq"] == 3  # created, the rival's take, our retried take
    assert state["last"] == "ours"
    # 20 - 1 (ours) - 5 (the rival's) - 1 (ours) plus a second or so of refill at 1/s: the
    # rival's take survived our retry.
    assert 13.0 <= state["tokens"] <= 15.0, state["tokens"]


def test_contention_never_hands_out_more_than_the_budget(seaweed, bucket, s3_client):
    """Four runs (two per tenant), each with two threads, race for a bucket of 30 that
    refills at one a second; blocks of one make every token a compare-and-swap."""
    key = "limits/contended.json"
    seconds = 3.0
    started = time.time()
    deadline = started + seconds

    class Stop(BaseException):
        pass

    def sleep_until_deadline(delay: float) -> None:
        if time.time() + delay > deadline:
            raise Stop
        time.sleep(delay)

    limiters = [
        SharedTokenBucket(
            make_client(connection(seaweed)),
            bucket,
            key,
            60,
            tenant,
            block=1,
            capacity=30,
            poll_seconds=0.02,
            sleep=sleep_until_deadline,
        )
        for tenant in ("a", "a", "b", "b")
    ]
    stamps: list[float] = []
    lock = threading.Lock()

    def hammer(limiter: SharedTokenBucket) -> None:
        try:
            while time.time() < deadline:
                limiter.acquire()
                with lock:
                    stamps.append(time.time())
        except Stop:
            pass

    threads = [threading.Thread(target=hammer, args=(lim,)) for lim in limiters for _ in "12"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    budget = limiters[0].max_in_window(max(stamps) - started)  # 30 + 1 + 1/s
    assert len(stamps) <= budget, (len(stamps), budget)
    assert len(stamps) >= 15  # and the bucket was actually drawn on
    assert sum(lim.counters.conflicts for lim in limiters) > 0  # races happened, were retried
    for lim in limiters:
        assert lim.stats.requests <= lim.counters.blocks * lim.block


# --- configuration ---------------------------------------------------------------------------


def test_for_limit_fits_blocks_into_the_headroom(s3_client):
    common = {"client": s3_client, "bucket": "pipeline", "key": "limits/p.json", "tenant": "t"}
    limiter = SharedTokenBucket.for_limit(500, **common)
    assert (limiter.rate_per_minute, limiter.block, limiter.capacity) == (450, 7, 14)
    assert limiter.max_in_window(60) <= 500
    assert SharedTokenBucket.for_limit(20, **common).max_in_window(60) <= 20
    with pytest.raises(ValueError, match="headroom"):
        SharedTokenBucket.for_limit(10, **common)  # 1 a minute of slack: no room for a block
    with pytest.raises(ValueError, match="headroom"):
        SharedTokenBucket.for_limit(500, headroom=1.0, **common)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"rate_per_minute": float("nan")}, "rate_per_minute"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "a\nb"}, "tenant"),
        ({"key": "limits/"}, "key"),
        ({"bucket": "Not_A_Bucket"}, "bucket"),
        ({"block": 0}, "block"),
        ({"block": 10, "capacity": 5}, "capacity"),
        ({"tenant_ttl": 0.1}, "tenant_ttl"),
        ({"client": None}, "client"),
    ],
)
def test_misconfiguration_is_refused_clearly(s3_client, change, message):
    args = {
        "client": s3_client,
        "bucket": "pipeline",
        "key": "limits/p.json",
        "rate_per_minute": 450,
        "tenant": "shop",
    } | change
    with pytest.raises(ValueError, match=message):
        SharedTokenBucket(**args)


def test_a_foreign_object_at_the_key_is_a_clear_error(seaweed, bucket, s3_client):
    key = "limits/foreign.json"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"not json")
    limiter = SharedTokenBucket(s3_client, bucket, key, 600, "shop")
    with pytest.raises(SharedLimiterError, match="not a shared rate-limit state"):
        limiter.acquire()


def test_an_endpoint_ignoring_conditions_is_refused():
    class IgnoresConditions:
        """An S3 stand-in that stores objects but ignores If-Match / If-None-Match."""

        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}

        def get_object(self, Bucket, Key):
            if Key not in self.objects:
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
                    "GetObject",
                )
            body = self.objects[Key]
            return {"Body": _Body(body), "ETag": f'"{hash(body)}"'}

        def put_object(self, Bucket, Key, Body, **_):
            self.objects[Key] = Body
            return {"ETag": f'"{hash(Body)}"'}

    limiter = SharedTokenBucket(IgnoresConditions(), "pipeline", "limits/p.json", 600, "shop")
    with pytest.raises(SharedLimiterError, match="ignores conditional writes"):
        limiter.acquire()


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data

    def close(self) -> None:
        pass


def test_stamps_helper_counts_windows():
    assert max_in_any_window([0.0, 0.1, 0.2, 5.0], 0.2) == 3
    assert max_in_any_window([0.0, 1.0, 2.0], 0.5) == 1
