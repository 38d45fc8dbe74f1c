"""Stages: named, versioned pure functions from decoded images to memo entries or failures.

A stage says what it reads (its :class:`Source`) and what its result depends on (its memo
``namespace``: name, code version, model id...); the engine (``assets/engine.py``) owns
everything else: memo look-ups and packs, fetching, decoding, chunks, memo writes. Stages
that share a source run over **one** decode of each image: :func:`compute_stages` decodes a
chunk once and hands the same images to every stage that still needs them.

Module-level and Dagster-free, so that a chunk can be computed in a spawned worker process
(``photogroup.chunks``) with picklable stages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from photogroup.chunks import Compute, Failed, Worker, this_worker, worker_threads
from photogroup.decode import open_work_image

__all__ = ["Compute", "Failed", "Source", "Stage", "StagesOutcome", "compute_payload",
           "compute_stages"]  # fmt: skip


class Source(StrEnum):
    """What a stage reads, decoded once per image for all the stages that read it."""

    UPLOAD = "upload"  # the uploaded bytes, on the uploads bucket
    WORKING_COPY = "working_copy"  # raw_images' normalised 512 px lossless copy (memo/work/)
    RENDITION = "rendition"  # a web rendition stored by product_images


#: How each source's bytes become what stages compute on. Uploads are decoded by the
#: manifest (photogroup.manifest.inspect_upload), which also rejects bad files.
DECODERS: dict[Source, Callable[[bytes], Any]] = {Source.WORKING_COPY: open_work_image}


@dataclass(frozen=True)
class Stage:
    """One table's pure computation: ``compute(images)`` returns, in order, a JSON-ready
    memo entry or :class:`Failed` per image. Failed images are rows with a reason in the
    stage's table and are not memoised (retried on the next run)."""

    name: str  # the asset it feeds; used in logs
    namespace: str  # memo namespace: everything the entry depends on besides the image
    source: Source
    compute: Compute
    #: Whether its chunks may go to worker processes: False for models with weights to load
    #: (they already use threads) or remote providers (their limiter lives in this process).
    in_workers: bool = True


@dataclass
class StagesOutcome:
    """One chunk: per stage, an entry or Failed per key it asked for; the keys whose bytes
    did not decode (for the caller to repair); decodes done; the process that did it."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> key -> entry
    unreadable: dict[str, str] = field(default_factory=dict)
    decoded: int = 0
    worker: Worker | None = None


def compute_stages(
    stages: Sequence[Stage], wanted: Mapping[str, Sequence[str]], blobs: Mapping[str, bytes]
) -> StagesOutcome:
    """Decode each blob once (with its stages' shared source) and run every stage on the
    images of the keys it wants (``wanted``: stage name -> keys).

    Decoding happens here, in the worker, so that only compressed bytes cross processes.
    """
    (source,) = {stage.source for stage in stages}  # one decode: one source per call
    decode = DECODERS[source]

    def attempt(blob: bytes) -> Any:
        try:
            return decode(blob)
        except Exception as exc:  # any unreadable copy is the caller's to rebuild
            return Failed(f"{type(exc).__name__}: {exc}")

    outcome = StagesOutcome()
    # Pillow releases the GIL while it decodes: a worker's share of the cores, or all.
    with ThreadPoolExecutor(max_workers=worker_threads() or os.cpu_count() or 1) as pool:
        decoded = dict(zip(blobs, pool.map(attempt, blobs.values()), strict=True))
    images = {k: img for k, img in decoded.items() if not isinstance(img, Failed)}
    outcome.unreadable = {k: f.reason for k, f in decoded.items() if isinstance(f, Failed)}
    outcome.decoded = len(blobs)
    for stage in stages:
        keys = [k for k in wanted.get(stage.name, ()) if k in images]
        computed = stage.compute([images[k] for k in keys]) if keys else []
        outcome.results[stage.name] = dict(zip(keys, computed, strict=True))
    outcome.worker = this_worker()
    return outcome


def compute_payload(stages: Sequence[Stage], payload: tuple[Mapping, Mapping]) -> StagesOutcome:
    """:func:`compute_stages` of a ``(wanted, blobs)`` chunk: what a worker is sent."""
    wanted, blobs = payload
    return compute_stages(stages, wanted, blobs)
