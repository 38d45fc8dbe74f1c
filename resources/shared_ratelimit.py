"""A token bucket shared by every run of the pipeline, its state one small JSON object on S3.

Several Dagster runs (one per upload batch, often of different shops) call the same hosted
provider, whose quota (say 500 requests a minute) is per account, not per run. A run's local
:class:`~photogroup.ratelimit.TokenBucket` only sees its own requests; this bucket keeps its
level in an object every run reads and updates by compare-and-swap: GET it with its ETag,
refill it by wall-clock time, take tokens, PUT it back with ``IfMatch=<etag>``
(``IfNoneMatch="*"`` to create it). ``PreconditionFailed`` means another run wrote first:
read again and retry after a short jittered backoff. Every write bumps a sequence number, so
an ETag (an MD5 of the content) never comes back for a changed state (no ABA).

Why compare-and-swap on S3:

* no extra server: every run already reaches the pipeline bucket, on AWS and in the local
  profile (SeaweedFS), and both honour conditional writes (checked once per instance: a PUT
  whose ``If-Match`` matches nothing must be refused, else :class:`SharedLimiterError`);
* a Dagster concurrency pool limits how many steps run at once, not how many requests they
  send a minute (one step with four threads outruns a quota that a pool of one allows);
* Redis (or DynamoDB) would do, but is not in the local profile: one more service to run.

**State**, at a key such as ``limits/<provider>.json`` on the pipeline bucket::

    {"v": 1, "seq": 812, "rate_per_minute": 450.0, "capacity": 14,
     "tokens": -3.5, "updated": 1718000000.25, "last": "shop-a",
     "waiting": {"shop-b": {"since": 1717999999.9, "seen": 1718000000.1}}}

``tokens`` is the level at wall time ``updated`` (below zero while a block is reserved),
``seq`` counts writes, ``rate_per_minute`` and ``capacity`` are the last taker's settings
(runs that disagree refill at the lower rate and log a warning), ``last`` is the tenant
served last and ``waiting`` the tenants waiting for a block. Deleting the object resets the
limiter (to a full bucket).

**Blocks and leases.** To keep S3 traffic low a run takes ``block`` tokens at once (about a
second's worth) and hands them out locally to its threads. A block is valid from the moment
the shared level, drawn below zero by the take, would be back at zero (a take may reserve at
most one block ahead: only a level >= 0 can be drawn from) and for ``lease_seconds = block /
rate`` after that; tokens unused by then expire. Expiry errs on the safe side: a lost token
only lowers throughput, a hoarded one could be spent together with fresh ones. The lease is
timed from before the PUT, so a PUT slower than the lease wastes its block; and when a PUT's
answer is lost and botocore's retry gets ``PreconditionFailed``, the block the first attempt
took is never handed out.

**Guarantee.** In any window of ``T`` seconds all runs together hand out at most
:meth:`SharedTokenBucket.max_in_window` = ``capacity + block + rate * T`` tokens (the bucket
starts full), plus ``rate * skew`` for wall clocks that run ``skew`` seconds apart: refill is
computed from ``time.time()``, the clock every machine shares, never earlier than the
state's last update, so a clock running behind gets no refill and one running ahead gets
``skew`` seconds' worth early. :meth:`SharedTokenBucket.for_limit` sizes ``capacity`` and
``block`` so that a whole minute stays within the provider's limit.

**Fairness.** The state lists the tenants waiting for a block (tenant -> when it started
waiting, and a heartbeat renewed every ``tenant_ttl / 3`` while it waits) and the tenant
served last. A tenant takes a block only when it is its turn: the live waiting tenant that
has waited longest, never the one served last while another waits (a tenant with nobody else
waiting may always take). A served tenant leaves the list and joins at its end when it needs
the next block, so waiting tenants are served round-robin: one store's 50,000 images take one
block in turn with another store's 10, not all before them. Entries whose heartbeat is older
than ``tenant_ttl`` are ignored and dropped (a crashed run blocks others for at most that
long); an interrupted acquire removes its entry at once if it can. Runs of one tenant share a
turn. ``tenant_ttl`` should exceed the clocks' skew.

**S3 requests.** A tenant alone takes a block with one PUT (it keeps the ETag its own PUT
returned: no GET while nobody else writes), about ``rate / block`` PUTs a second: 1.1 at
450 requests a minute with the default one-second blocks of 7. Tenants taking turns add, per
block, a PUT to join the waiting list, a lost race (a refused PUT and a GET) and polls while
another's turn lasts. Measured on SeaweedFS at 450 a minute with every run asking as fast as
it can: 1.3 requests a second in all for one tenant, 5 for two, 7 for three.
"""

import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Self

import botocore.exceptions

from photogroup.ratelimit import LimiterStats, backoff_delays
from resources.s3 import check_bucket_name

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: Answers to a conditional PUT meaning "the object is not the one you read": 412 from S3 and
#: SeaweedFS; 409 from S3 when two conditional writes race; NoSuchKey if it was deleted.
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"})
_CONFLICT_STATUSES = frozenset({409, 412})
#: An If-Match that names no object version: the one-off check that conditions are honoured.
_NO_SUCH_ETAG = '"00000000000000000000000000000000"'
_MAX_TENANT = 200


class SharedLimiterError(RuntimeError):
    """The shared state cannot be used: not a state object, or conditions are ignored."""


@dataclass
class SharedBucketCounters:
    """S3 traffic of one :class:`SharedTokenBucket`; safe to read from any thread."""

    gets: int = 0
    puts: int = 0
    conflicts: int = 0  # PUTs refused because another run wrote first
    blocks: int = 0  # blocks taken
    tokens_expired: int = 0  # leased tokens unused when their lease ended
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def as_metadata(self) -> dict[str, int]:
        with self._lock:
            return {
                "shared_limiter_gets": self.gets,
                "shared_limiter_puts": self.puts,
                "shared_limiter_conflicts": self.conflicts,
                "shared_limiter_blocks": self.blocks,
                "shared_limiter_tokens_expired": self.tokens_expired,
            }


@dataclass(frozen=True)
class _State:
    """The shared object. ``tokens`` is the level at wall time ``updated`` (below zero while
    a block is reserved); ``waiting`` maps tenant -> (since, seen); ``rate_per_minute`` and
    ``capacity`` are the last taker's settings."""

    tokens: float
    updated: float
    rate_per_minute: float
    capacity: int
    seq: int = 0
    last: str | None = None
    waiting: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "v": STATE_VERSION,
                "seq": self.seq,
                "rate_per_minute": self.rate_per_minute,
                "capacity": self.capacity,
                "tokens": self.tokens,
                "updated": self.updated,
                "last": self.last,
                "waiting": {
                    tenant: {"since": since, "seen": seen}
                    for tenant, (since, seen) in sorted(self.waiting.items())
                },
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, body: bytes, where: str) -> "_State":
        try:
            raw = json.loads(body)
            if raw.get("v") != STATE_VERSION:
                raise ValueError(f"version {raw.get('v')!r}, expected {STATE_VERSION}")
            last = raw["last"]
            if last is not None and not isinstance(last, str):
                raise TypeError(f"last is {last!r}")
            state = cls(
                tokens=float(raw["tokens"]),
                updated=float(raw["updated"]),
                rate_per_minute=float(raw["rate_per_minute"]),
                capacity=int(raw["capacity"]),
                seq=int(raw["seq"]),
                last=last,
                waiting={
                    str(tenant): (float(entry["since"]), float(entry["seen"]))
                    for tenant, entry in raw["waiting"].items()
                },
            )
            numbers = [state.tokens, state.updated, state.rate_per_minute]
            numbers += [t for entry in state.waiting.values() for t in entry]
            if (
                not all(map(math.isfinite, numbers))
                or min(state.rate_per_minute, state.capacity) <= 0
            ):
                raise ValueError("non-finite or non-positive numbers")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SharedLimiterError(
                f"{where} is not a shared rate-limit state ({exc}); is its key used by "
                "something else? Deleting it resets the limiter."
            ) from exc
        return state


class SharedTokenBucket:
    """A token bucket shared through ``s3://bucket/key`` by every process that names it.

    Drop-in for :class:`~photogroup.ratelimit.TokenBucket` where a provider client expects
    one: :meth:`acquire` blocks until a token is available and returns the seconds it
    waited, and ``stats`` counts them; ``counters`` counts the S3 traffic. See the module
    docstring for the design and its guarantee (:meth:`max_in_window`).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        rate_per_minute: float,
        tenant: str,
        block: int | None = None,
        *,
        capacity: int | None = None,
        tenant_ttl: float = 10.0,
        poll_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        stats: LimiterStats | None = None,
    ) -> None:
        """``client`` is a boto3 S3 client (``S3Resource.get_client()``); ``rate_per_minute``
        is the rate to run at (headroom already applied: see :meth:`for_limit`); ``tenant``
        names the fairness unit, e.g. the shop. ``block`` defaults to one second's worth,
        ``capacity`` (the most the bucket holds) to two blocks. ``clock`` is wall time
        shared by all machines; ``monotonic`` times leases locally."""
        if client is None or not all(
            hasattr(client, name) for name in ("get_object", "put_object")
        ):
            raise ValueError(f"client must be a boto3 S3 client, got {client!r}")
        check_bucket_name(bucket)
        if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/"):
            raise ValueError(
                f"key must name an object such as 'limits/<provider>.json', got {key!r}"
            )
        if not isinstance(rate_per_minute, int | float) or not (0 < rate_per_minute < math.inf):
            raise ValueError(f"rate_per_minute must be a positive number, got {rate_per_minute!r}")
        if (
            not isinstance(tenant, str)
            or not tenant.strip()
            or len(tenant) > _MAX_TENANT
            or not tenant.isprintable()
        ):
            raise ValueError(
                f"tenant must be a non-empty printable name of at most {_MAX_TENANT} "
                f"characters (e.g. the shop id), got {tenant!r}"
            )
        per_second = rate_per_minute / 60.0
        if block is None:
            block = max(1, int(per_second))
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be an integer >= 1, got {block!r}")
        if capacity is None:
            capacity = 2 * block
        if not isinstance(capacity, int) or capacity < block:
            raise ValueError(
                f"capacity must be an integer >= block ({block}), got {capacity!r}: "
                "a smaller bucket could never hold a block"
            )
        if not tenant_ttl >= 1.0:
            raise ValueError(
                f"tenant_ttl must be >= 1 second (waiting tenants renew their entry every "
                f"tenant_ttl / 3), got {tenant_ttl!r}"
            )
        self.lease_seconds = block / per_second
        if poll_seconds is None:
            poll_seconds = min(0.25, max(0.01, self.lease_seconds / 4))
        if not 0 < poll_seconds <= tenant_ttl / 3:
            raise ValueError(f"poll_seconds must be in (0, tenant_ttl / 3], got {poll_seconds!r}")

        self.bucket = bucket
        self.key = key
        self.url = f"s3://{bucket}/{key}"
        self.rate_per_minute = float(rate_per_minute)
        self.tenant = tenant
        self.block = block
        self.capacity = capacity
        self.tenant_ttl = float(tenant_ttl)
        self.poll_seconds = float(poll_seconds)
        self.stats = stats if stats is not None else LimiterStats()
        self.counters = SharedBucketCounters()
        self._client = client
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._heartbeat = self.tenant_ttl / 3
        self._lock = threading.Lock()
        # The local lease: tokens left, usable from/until (monotonic).
        self._leased = 0
        self._lease_from = 0.0
        self._lease_until = 0.0
        # The state as last read or written, and its ETag; None: read it again.
        self._cached: tuple[_State | None, str | None] | None = None
        self._verified = False
        self._warned_mismatch = False

    @classmethod
    def for_limit(
        cls,
        limit_per_minute: float,
        headroom: float = 0.9,
        *,
        client: Any,
        bucket: str,
        key: str,
        tenant: str,
        block: int | None = None,
        capacity: int | None = None,
        block_seconds: float = 1.0,
        **kwargs: Any,
    ) -> Self:
        """A shared bucket at ``headroom`` x the provider's documented limit, whose
        :meth:`max_in_window` of a minute stays within ``limit_per_minute``.

        ``block`` defaults to ``block_seconds`` worth of the reduced rate and ``capacity``
        to two blocks, both shrunk to fit the slack the headroom leaves (``capacity + block
        <= limit - rate``); a ValueError says when even the smallest do not fit.
        """
        if not isinstance(limit_per_minute, int | float) or not (0 < limit_per_minute < math.inf):
            raise ValueError(
                f"limit_per_minute must be a positive number, got {limit_per_minute!r}"
            )
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        if not block_seconds > 0:
            raise ValueError(f"block_seconds must be > 0, got {block_seconds!r}")
        rate = limit_per_minute * headroom
        slack = math.floor(limit_per_minute - rate + 1e-9)
        if block is None:
            block = max(1, min(int(rate / 60 * block_seconds), slack // 2))
        if capacity is None:
            capacity = max(block, min(2 * block, slack - block))
        if capacity + block > slack:
            raise ValueError(
                f"headroom {headroom} of {limit_per_minute:g}/min leaves {slack} requests a "
                f"minute of slack, but a shared bucket may hand out capacity + block = "
                f"{capacity + block} beyond its rate within a minute: lower headroom "
                "(or pass a smaller block / capacity)"
            )
        return cls(client, bucket, key, rate, tenant, block, capacity=capacity, **kwargs)

    def max_in_window(self, seconds: float) -> float:
        """The most tokens all users of this state hand out in any window of ``seconds``
        (same settings everywhere, clocks in step)."""
        return self.capacity + self.block + self.rate_per_minute / 60.0 * seconds

    def __repr__(self) -> str:
        return (
            f"SharedTokenBucket({self.url!r}, rate_per_minute={self.rate_per_minute:g}, "
            f"tenant={self.tenant!r}, block={self.block}, capacity={self.capacity})"
        )

    # --- acquiring ---------------------------------------------------------------------------

    def acquire(self) -> float:
        """Block until a token is available; return the seconds waited: 0.0 when a leased
        token was at hand, else the time spent getting one (S3 round trips included)."""
        started = self._monotonic()
        contended = not self._lock.acquire(blocking=False)
        if contended:
            self._lock.acquire()
        refilled = False
        try:
            while True:
                now = self._monotonic()
                if self._leased and now >= self._lease_until:
                    self.counters.add(tokens_expired=self._leased)
                    self._leased = 0
                if self._leased:
                    if now >= self._lease_from:
                        self._leased -= 1
                        break
                    self._sleep(self._lease_from - now)
                    continue
                self._lease_block()
                refilled = True
        finally:
            self._lock.release()
        waited = max(0.0, self._monotonic() - started) if contended or refilled else 0.0
        self.stats.record_acquire(waited)
        return waited

    def _lease_block(self) -> None:
        """Take the next block from the shared state into the local lease (lock held)."""
        conflicts = 0
        registered = False
        try:
            while True:
                if self._cached is None:
                    self._cached = self._read()
                state, etag = self._cached
                wall, mono = self._clock(), self._monotonic()
                if state is None:  # the first user ever: create it, full
                    state = _State(float(self.capacity), wall, self.rate_per_minute, self.capacity)
                now = max(wall, state.updated)
                per_second = self._per_second(state)
                level = min(
                    float(min(self.capacity, state.capacity)),
                    state.tokens + (now - state.updated) * per_second,
                )
                live = {
                    tenant: entry
                    for tenant, entry in state.waiting.items()
                    if now - entry[1] <= self.tenant_ttl
                }
                my_turn = self._my_turn(live, state.last, now)

                if my_turn and level >= 0:
                    live.pop(self.tenant, None)
                    taken = replace(
                        state,
                        tokens=level - self.block,
                        updated=now,
                        rate_per_minute=self.rate_per_minute,
                        capacity=self.capacity,
                        seq=state.seq + 1,
                        last=self.tenant,
                        waiting=live,
                    )
                    if not self._write(taken, etag):
                        self._backoff(conflicts)
                        conflicts += 1
                        continue
                    registered = False
                    self._leased = self.block
                    self._lease_from = mono + max(0.0, self.block - level) / per_second
                    self._lease_until = self._lease_from + self.lease_seconds
                    self.counters.add(blocks=1)
                    return

                mine = live.get(self.tenant)
                if mine is None or now - mine[1] >= self._heartbeat:
                    live[self.tenant] = (mine[0] if mine else now, now)
                    if not self._write(replace(state, seq=state.seq + 1, waiting=live), etag):
                        self._backoff(conflicts)
                        conflicts += 1
                        continue
                    registered = True
                until_zero = max(0.0, -level) / per_second
                if my_turn:  # a reserved block is pending: ours is next, the CAS checks that
                    delay = until_zero + 0.001
                else:  # another's turn: look again once it could have taken its block
                    delay = until_zero + self.poll_seconds * self._rng.uniform(0.5, 1.0)
                    self._cached = None
                self._sleep(min(delay, self._heartbeat))
        except BaseException:
            self._cached = None
            if registered:
                self._withdraw()
            raise

    def _my_turn(self, live: dict[str, tuple[float, float]], last: str | None, now: float) -> bool:
        """Whether this tenant may take the next block: the longest-waiting live tenant,
        skipping the one served last unless nobody else waits."""
        queue = {tenant: since for tenant, (since, _) in live.items()}
        queue.setdefault(self.tenant, now)
        if len(queue) > 1 and last is not None:
            queue.pop(last, None)
        return min(queue, key=lambda tenant: (queue[tenant], tenant)) == self.tenant

    def _per_second(self, state: _State) -> float:
        """Refill rate: the lower of ours and the last taker's, should they differ."""
        if state.rate_per_minute != self.rate_per_minute and not self._warned_mismatch:
            self._warned_mismatch = True
            log.warning(
                "%s was last written with rate_per_minute=%g, this run uses %g: refilling "
                "at the lower until all runs agree",
                self.url,
                state.rate_per_minute,
                self.rate_per_minute,
            )
        return min(state.rate_per_minute, self.rate_per_minute) / 60.0

    def _backoff(self, attempt: int) -> None:
        self._sleep(backoff_delays(attempt, base=0.02, cap=0.25, rng=self._rng))

    def _withdraw(self) -> None:
        """Best effort, when an acquire is interrupted while waiting: leave the waiting list
        now rather than make the others wait for the entry to expire."""
        with contextlib.suppress(Exception):
            state, etag = self._read()
            if state is not None and self.tenant in state.waiting:
                waiting = {t: e for t, e in state.waiting.items() if t != self.tenant}
                self._write(replace(state, seq=state.seq + 1, waiting=waiting), etag)
        self._cached = None

    # --- S3 ----------------------------------------------------------------------------------

    def _read(self) -> tuple[_State | None, str | None]:
        """The state and its ETag, or (None, None) if there is none yet."""
        self.counters.add(gets=1)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.key)
        except botocore.exceptions.ClientError as exc:
            code, status = _error(exc)
            if code == "NoSuchKey" or status == 404:
                return None, None
            raise
        try:
            body = response["Body"].read()
        finally:
            response["Body"].close()
        state = _State.from_json(body, self.url)
        self._verify_conditional_writes(body)
        return state, response["ETag"]

    def _write(self, state: _State, etag: str | None) -> bool:
        """PUT ``state`` if the object is still the one with ``etag`` (absent if None).
        False if another writer came first; the cache holds what was written, else None."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        body = state.to_json()
        self._cached = None
        self.counters.add(puts=1)
        try:
            response = self._client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                ContentType="application/json",
                **condition,
            )
        except botocore.exceptions.ClientError as exc:
            if _is_conflict(exc):
                self.counters.add(conflicts=1)
                return False
            raise
        if response.get("ETag"):
            self._cached = (state, response["ETag"])
        self._verify_conditional_writes(body)
        return True

    def _verify_conditional_writes(self, body: bytes) -> None:
        """Once per instance: a PUT whose If-Match matches no version must be refused. Its
        body is the state just read or written, so even a server that ignores conditions
        has nothing changed by the check."""
        if self._verified:
            return
        self.counters.add(puts=1)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                ContentType="application/json",
                IfMatch=_NO_SUCH_ETAG,
            )
        except botocore.exceptions.ClientError as exc:
            if not _is_conflict(exc):
                raise
            self._verified = True
            return
        raise SharedLimiterError(
            f"{self.url}: the S3 endpoint accepted a PUT whose If-Match matched nothing, so it "
            "ignores conditional writes and runs sharing this limiter could take the same "
            "tokens; use an endpoint that supports them (AWS S3, SeaweedFS)"
        )


def _error(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return exc.response.get("Error", {}).get("Code", ""), status


def _is_conflict(exc: botocore.exceptions.ClientError) -> bool:
    code, status = _error(exc)
    return code in _CONFLICT_CODES or status in _CONFLICT_STATUSES
