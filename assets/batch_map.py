"""Memoised map over a batch's images: memo -> working copy -> core function -> entry.

Shared by the stages that need pixels. A stage looks its entries up by SHA-256 in one
concurrent batch; only misses load a working copy (the small normalised PNG that
raw_images stored), and only a missing working copy sends it back to the upload.

Misses are computed in chunks of ``chunk_size`` images, in this process or in
``processes`` worker processes (photogroup.chunks): memory holds at most ``processes + 1``
chunks of working copies whatever the batch size, and each chunk's entries are written to
the memo as soon as it finishes.
"""

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import dagster as dg
from pydantic import Field

from assets.versions import WORK_VERSION
from photogroup import Rejection, decode_image, encode_work_image
from photogroup.chunks import Compute, Failed, Worker, compute_chunk, imap_chunks, peak_rss_mb
from resources.memo import MemoStore
from resources.s3 import FetchReport
from resources.uploads import UploadsBucket

WORK_NAMESPACE = f"work/{WORK_VERSION}"
#: Images decoded and computed per chunk: bounds memory to a chunk of working copies.
CHUNK = 64


class ChunkConfig(dg.Config):
    """How a stage splits its misses (neither changes a result, so neither is in a memo key)."""

    chunk_size: int = Field(
        default=CHUNK,
        ge=1,
        description="Images per chunk: memory holds (processes + 1) chunks of working copies, "
        "and entries are memoised chunk by chunk.",
    )
    processes: int = Field(
        default=1,
        ge=1,
        description="Worker processes computing chunks; 1 computes in the step's process "
        "(with threads). Each worker costs a Python start-up and its own memory.",
    )


@dataclass
class MapResult:
    entries: dict[str, dict] = field(default_factory=dict)  # by SHA-256
    failures: dict[str, str] = field(default_factory=dict)  # SHA-256 -> reason
    hits: int = 0
    misses: int = 0
    work_images_loaded: int = 0
    originals_fetched: int = 0
    bytes_fetched: int = 0
    corrupt_entries: int = 0
    fetch: FetchReport = field(default_factory=FetchReport)  # image bytes: copies, uploads
    chunk_size: int = CHUNK
    processes: int = 1
    workers: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS, MiB
    compute_calls: list[int] = field(default_factory=list)  # images per call of compute

    def metadata(self) -> dict:
        lookups = self.hits + self.misses
        return {
            "memo_hits": self.hits,
            "memo_misses": self.misses,
            "memo_hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
            "memo_corrupt_entries": self.corrupt_entries,
            "work_images_loaded": self.work_images_loaded,
            "originals_fetched": self.originals_fetched,
            "image_bytes_fetched": self.bytes_fetched,
            "failed": len(self.failures),
            **self.fetch.metadata(),
            "chunk_size": self.chunk_size,
            "processes": self.processes,
            **worker_metadata(self.workers),
        }


def note_worker(workers: dict[int, float], worker: Worker | None) -> None:
    if worker is not None:
        workers[worker.pid] = max(workers.get(worker.pid, 0.0), worker.peak_rss_mb)


def worker_metadata(workers: dict[int, float]) -> dict:
    """How many processes computed chunks; peak memory of this process so far (the step's
    own under the multiprocess executor, the whole run's in-process) and of the largest
    worker process (0 when chunks ran here)."""
    here = os.getpid()
    return {
        "compute_processes": len(workers),
        "peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": max((mb for pid, mb in workers.items() if pid != here), default=0.0),
    }


def map_images(
    sources: dict[str, str],
    namespace: str,
    compute: Compute,
    *,
    memo: MemoStore,
    uploads: UploadsBucket,
    log,
    label: str,
    pack: str | None = None,
    chunk: int = CHUNK,
    processes: int = 1,
) -> MapResult:
    """Entries for every SHA-256 in ``sources`` (sha -> upload key), computing only misses.

    ``pack`` (the partition key) names the batch's pack of entries, read first and
    rewritten when it did not already hold every entry. With ``processes > 1``, ``compute``
    must be picklable (a module-level function or a partial of one).
    """
    result = MapResult(chunk_size=chunk, processes=processes)

    def corrupt(key: str, why: str) -> None:
        result.corrupt_entries += 1
        log.warning(f"{label}: memo entry {key[:12]} ignored and recomputed ({why})")

    result.entries, pack_complete = memo.lookup(namespace, sources, corrupt, pack=pack)
    result.hits = len(result.entries)
    missing = [sha for sha in sources if sha not in result.entries]
    result.misses = len(missing)
    log.info(f"{label}: {result.hits} memo hits, {result.misses} to compute")

    def chunks() -> Iterator[tuple[list[str], dict[str, bytes]]]:
        # Drawn lazily by imap_chunks: a chunk's copies are fetched when a worker needs them.
        for start in range(0, len(missing), chunk):
            shas = missing[start : start + chunk]
            yield shas, _working_copies(shas, sources, memo, uploads, result)

    done, total = 0, -(-len(missing) // chunk)
    work = partial(compute_chunk, compute)
    for shas, outcome in imap_chunks(work, chunks(), processes, total):
        note_worker(result.workers, outcome.worker)
        result.compute_calls.append(len(outcome.results))
        if outcome.unreadable:
            for sha, why in outcome.unreadable.items():
                result.corrupt_entries += 1
                log.warning(f"working copy {sha[:12]} unreadable, rebuilt from the upload ({why})")
            # Rare (a damaged cache entry): computed here rather than queued again.
            copies = _rebuild(list(outcome.unreadable), sources, memo, uploads, result)
            rebuilt = compute_chunk(compute, copies)
            result.compute_calls.append(len(rebuilt.results))
            outcome.results.update(rebuilt.results)
        computed = {sha: e for sha, e in outcome.results.items() if not isinstance(e, Failed)}
        for sha, entry in outcome.results.items():
            if isinstance(entry, Failed):
                result.failures[sha] = entry.reason
                log.warning(f"{label}: {sources[sha]} failed: {entry.reason}")
        # Written per chunk: a run that dies later keeps what it finished.
        memo.put_json_many(namespace, computed)
        result.entries.update(computed)
        done += len(shas)
        log.info(f"{label}: computed {done}/{len(missing)} ({100 * done // len(missing)}%)")
    if pack and not pack_complete and not result.failures:
        memo.write_pack(namespace, pack, {sha: result.entries[sha] for sha in sources})
    return result


def _working_copies(shas, sources, memo, uploads, result: MapResult) -> dict[str, bytes]:
    """PNG bytes of each working copy; copies gone from the memo are rebuilt from uploads.

    Not decoded here: the chunk's worker decodes them, and reports those that do not open.
    """
    blobs, _ = memo.get_many(WORK_NAMESPACE, shas, totals=result.fetch)
    result.work_images_loaded += len(blobs)
    result.bytes_fetched += sum(len(b) for b in blobs.values())
    lost = [sha for sha in shas if sha not in blobs]
    if lost:
        blobs.update(_rebuild(lost, sources, memo, uploads, result))
    return {sha: blobs[sha] for sha in shas}


def _rebuild(shas, sources, memo, uploads, result: MapResult) -> dict[str, bytes]:
    """Working copies are a cache too: rebuilt from the uploads, and stored again."""
    report = uploads.fetch([sources[sha] for sha in shas])
    result.fetch += report.without_bytes()
    if report.errors:
        raise dg.Failure(f"could not re-fetch {len(report.errors)} uploads: {report.errors}")
    result.originals_fetched += len(report.data)
    result.bytes_fetched += report.bytes_fetched
    rebuilt = {}
    for sha in shas:
        data = report.data[sources[sha]]
        if hashlib.sha256(data).hexdigest() != sha:
            raise dg.Failure(f"{sources[sha]} changed since raw_images ran: re-run it first")
        try:
            rebuilt[sha] = encode_work_image(decode_image(data).image)
        except Rejection as exc:
            raise dg.Failure(f"{sources[sha]} no longer decodes: {exc}") from exc
    memo.put_many(WORK_NAMESPACE, rebuilt)
    return rebuilt
