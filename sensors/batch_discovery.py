"""Dagster-free discovery of upload batches that are ready to process.

A batch (``uploads/<tenant>/<batch>/``) is ready when its ``_SUCCESS`` marker exists
(and every file a JSON manifest in it names has arrived), or, if a quiet period is
configured, when none of its objects changed for that long. Each ready batch gets a
*seal token* that changes when it is re-sealed, so a re-seal is a new run.

Every tick lists the whole prefix, page by page (1,000 keys a page), and asks the sensor's
state (``handled``) about each sealing. Nothing is skipped by key order, so a key that
lands while the listing runs is seen now or on the next tick, never missed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orchestration.partitions import BatchKey
from resources.uploads import SEAL_MARKER


class MalformedManifest(ValueError):
    """A ``_SUCCESS`` object with content that is not the documented JSON manifest."""


@dataclass
class BatchListing:
    """What one listing saw of a batch."""

    key: BatchKey
    files: set[str] = field(default_factory=set)
    newest: datetime | None = None  # latest LastModified of any of its objects
    marker_etag: str | None = None
    marker_modified: datetime | None = None
    marker_size: int = 0

    def quiet_for(self, now: datetime) -> float:
        return (now - self.newest).total_seconds()

    def seal_token(self, now: datetime, quiet_seconds: int) -> str | None:
        """A token naming this sealing of the batch, or None if it is not ready."""
        if self.marker_etag is not None:
            basis = f"seal:{self.marker_etag}:{self.marker_modified.isoformat()}"
        elif quiet_seconds > 0 and self.files and self.quiet_for(now) >= quiet_seconds:
            basis = f"quiet:{self.newest.isoformat()}:{len(self.files)}"
        else:
            return None
        return hashlib.sha256(basis.encode()).hexdigest()[:12]

    def sealed_at(self, quiet_seconds: int) -> datetime:
        """When it was sealed: the marker's LastModified, or when it fell quiet."""
        if self.marker_modified is not None:
            return self.marker_modified
        return self.newest + timedelta(seconds=quiet_seconds)


def list_batches(client, bucket: str, prefix: str = "uploads") -> tuple[dict, list[str]]:
    """Every batch under ``prefix``, and the keys that are not ``<tenant>/<batch>/<file>``."""
    batches: dict[BatchKey, BatchListing] = {}
    stray: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            tenant, _, rest = obj["Key"][len(prefix) + 1 :].partition("/")
            name, _, file = rest.partition("/")
            try:
                key = BatchKey(tenant, name)
            except ValueError:
                stray.append(obj["Key"])
                continue
            if not file or file.endswith("/"):
                stray.append(obj["Key"])
                continue
            batch = batches.setdefault(key, BatchListing(key))
            modified = obj["LastModified"]
            batch.newest = max(batch.newest or modified, modified)
            if file == SEAL_MARKER:
                batch.marker_etag = obj["ETag"].strip('"')
                batch.marker_modified = modified
                batch.marker_size = int(obj["Size"])
            else:
                batch.files.add(file)
    return batches, stray


def parse_manifest(body: bytes) -> list[str] | None:
    """Files a ``_SUCCESS`` manifest promises; None for an empty marker."""
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedManifest(f"_SUCCESS is neither empty nor JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedManifest("_SUCCESS JSON must be an object")
    files = doc.get("files")
    if files is None:
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise MalformedManifest('"files" in _SUCCESS must be a list of file names')
    return files


@dataclass
class Discovery:
    ready: dict[BatchKey, tuple[str, datetime]] = field(default_factory=dict)  # token, sealed
    waiting: int = 0  # not sealed (or quiet) yet, or files promised by the manifest missing
    incomplete: dict[str, str] = field(default_factory=dict)  # sealed, files missing: token
    malformed: dict[str, str] = field(default_factory=dict)  # partition key -> error
    malformed_tokens: dict[str, str] = field(default_factory=dict)  # partition key -> token
    unchanged: int = 0  # ready, but with the token already handled
    stray: list[str] = field(default_factory=list)


def discover(
    client,
    bucket: str,
    prefix: str,
    *,
    now: datetime,
    quiet_seconds: int = 0,
    handled: Callable[[str, str, datetime], bool] = lambda key, token, sealed: False,
) -> Discovery:
    """Batches ready to run whose sealing (token, seal time) is not ``handled`` yet."""
    batches, stray = list_batches(client, bucket, prefix)
    found = Discovery(stray=stray)
    for key, listing in sorted(batches.items()):
        token = listing.seal_token(now, quiet_seconds)
        if token is None:
            found.waiting += 1
            continue
        sealed = listing.sealed_at(quiet_seconds)
        if handled(key.partition_key, token, sealed):
            found.unchanged += 1
            continue
        if listing.marker_size:
            marker = f"{prefix}/{key.tenant}/{key.batch}/{SEAL_MARKER}"
            try:
                body = client.get_object(Bucket=bucket, Key=marker)["Body"].read()
                promised = parse_manifest(body)
            except MalformedManifest as exc:
                found.malformed[key.partition_key] = str(exc)
                found.malformed_tokens[key.partition_key] = token
                continue
            if promised and not set(promised) <= listing.files:
                found.waiting += 1
                found.incomplete[key.partition_key] = token
                continue
        found.ready[key] = (token, sealed)
    return found


def round_robin(ready: dict[BatchKey, str], start_after: str | None, cap: int) -> tuple:
    """Up to ``cap`` ready batches, one per tenant in turn, oldest batch name first.

    Tenants are visited in name order starting after ``start_after`` (the last tenant
    served on the previous tick), so a tenant with a thousand waiting batches takes one
    slot per round and a tenant with one batch is served in the first round.
    Returns the chosen batches and the last tenant served.
    """
    queues: dict[str, list[BatchKey]] = {}
    for key in sorted(ready):
        queues.setdefault(key.tenant, []).append(key)
    tenants = sorted(queues)
    first = next((i for i, t in enumerate(tenants) if start_after is None or t > start_after), 0)
    order = tenants[first:] + tenants[:first]
    chosen: list[BatchKey] = []
    last = start_after
    while len(chosen) < cap and any(queues.values()):
        for tenant in order:
            if queues[tenant] and len(chosen) < cap:
                chosen.append(queues[tenant].pop(0))
                last = tenant
    return chosen, last
