"""Dagster-free discovery of sealed upload batches (``uploads/<tenant>/<batch>/_SUCCESS``)."""

from __future__ import annotations

from orchestration.partitions import BatchKey
from resources.uploads import SEAL_MARKER


def sealed_batches(client, bucket: str, prefix: str = "uploads") -> tuple[set[BatchKey], int]:
    """Every sealed batch, and how many batches have uploads but no seal yet.

    Lists the whole prefix page by page (1,000 keys a page) rather than filtering by
    LastModified: listings are ordered by key, not time, so a time cursor can miss keys.
    """
    sealed, seen = set(), set()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            parts = obj["Key"][len(prefix) + 1 :].split("/")
            if len(parts) < 3:
                continue
            try:
                batch = BatchKey(parts[0], parts[1])
            except ValueError:
                continue  # not a valid batch name; `run` reports it if asked for it
            seen.add(batch)
            if parts[2:] == [SEAL_MARKER]:
                sealed.add(batch)
    return sealed, len(seen - sealed)
