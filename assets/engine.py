"""The stage engine: the one memo loop of every image stage, and the runner of stages.

:class:`MemoRun` is the memo loop: look a batch's keys up in one or more namespaces (the
batch's pack first, then the keys it lacks, concurrently), hand out the missing keys, write
each chunk's entries as soon as the chunk finishes (on a background thread while the next
one computes; a run that dies keeps its work), count failures (reported as rows, never
memoised), and rewrite a pack that did not hold every entry. Every stage goes through it:
raw_images (fingerprints), the working-copy stages, renditions and cut-outs.

:func:`run_stages` runs :class:`photogroup.stages.Stage` s that read the working copy: it
fetches each image's copy **once** for every stage that misses it, decodes it once
(``photogroup.stages.compute_stages``), in chunks of ``chunk`` images in this process (the
stages use threads) or in ``processes`` worker processes (photogroup.chunks): memory holds
at most ``processes + 1`` chunks of working copies whatever the batch size. A copy gone
from the memo is rebuilt from its upload.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dagster as dg
from pydantic import Field

from assets.versions import WORK_VERSION
from photogroup import Rejection, decode_image, encode_work_image
from photogroup.chunks import Failed, Worker, imap_chunks, peak_rss_mb
from photogroup.stages import Stage, StagesOutcome, compute_payload, compute_stages
from resources.memo import MemoStore
from resources.s3 import BackgroundWrites, FetchReport
from resources.uploads import UploadsBucket

WORK_NAMESPACE = f"work/{WORK_VERSION}"
#: Images decoded and computed per chunk: bounds memory to a chunk of working copies.
CHUNK = 64
#: Images to compute from which a step uses one worker process per core by default.
AUTO_MIN_IMAGES = 256


class ChunkConfig(dg.Config):
    """How a stage splits its misses (neither changes a result, so neither is in a memo key)."""

    chunk_size: int = Field(
        default=CHUNK,
        ge=1,
        description="Images per chunk: memory holds (processes + 1) chunks of working copies, "
        "and entries are memoised chunk by chunk.",
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        description="Worker processes computing chunks; 1 computes in the step's process "
        f"(with threads). None: one per core when there are at least {AUTO_MIN_IMAGES} "
        "images to compute (a worker costs a Python start-up and its own memory), else 1.",
    )


def auto_processes(processes: int | None, images: int, chunk: int) -> int:
    """``processes`` if set; else one worker per core for a batch large enough to repay
    their start-up (about a second each): threads alone leave part of a core idle in the
    Python between Pillow/NumPy/OpenCV calls (2,000 images through the image stages: 1.51x
    with 2 processes on 2 cores, README "Large batches"). Never more than there are chunks:
    memory holds at most ``processes + 1`` of them."""
    if processes is not None:
        return processes
    if images < AUTO_MIN_IMAGES:
        return 1
    return max(1, min(os.cpu_count() or 1, -(-images // chunk)))


class MemoRun:
    """One batch's memo entries in one or more namespaces (by name), for ``keys``."""

    def __init__(
        self,
        memo: MemoStore,
        namespaces: dict[str, str],
        keys: Iterable[str],
        *,
        pack: str | None,
        log,
        label: str,
        computed: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """``computed``: results (entries or Failed, by name and key) already computed in
        this run by a step sharing its decode (renditions made with the manifest): not
        looked up, counted as misses, and recorded like any chunk's."""
        self.memo, self.namespaces, self.pack, self.log = memo, namespaces, pack, log
        #: Entries (and whatever else the step stores per chunk) are written on a
        #: background thread while the next chunk computes; :meth:`finish` waits for them.
        self.writes = BackgroundWrites()
        self.keys = list(dict.fromkeys(keys))
        self.entries: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, dict[str, str]] = {name: {} for name in namespaces}
        self.corrupt: dict[str, int] = {name: 0 for name in namespaces}
        self.hits: dict[str, int] = {}
        self._complete: dict[str, bool] = {}
        computed = {name: dict(computed.get(name, {})) for name in namespaces} if computed else {}
        keyset = set(self.keys)
        for name, namespace in namespaces.items():

            def corrupt(key: str, why: str, name: str = name) -> None:
                self.corrupt[name] += 1
                log.warning(f"{name}: memo entry {key[:12]} ignored and recomputed ({why})")

            done = {k: v for k, v in computed.get(name, {}).items() if k in keyset}
            computed[name] = done
            lookup = [k for k in self.keys if k not in done]
            found, complete = memo.lookup(namespace, lookup, corrupt, pack=pack)
            self.entries[name], self._complete[name] = found, complete and not done
            self.hits[name] = len(found)
            log.info(f"{label}/{name}: {len(found)} memo hits, "
                     f"{len(self.keys) - len(found)} to compute")  # fmt: skip
        self.misses = {name: len(self.missing(name)) for name in namespaces}
        for name, results in computed.items():
            self.record(name, results)

    def missing(self, name: str) -> list[str]:
        """Keys without an entry in ``name`` and not failed in this run, in the batch's
        order."""
        failed = self.failures[name]
        return [k for k in self.keys if k not in self.entries[name] and k not in failed]

    def record(self, name: str, results: dict[str, Any], label: Callable[[str], str] = str):
        """A chunk's results: entries are memoised now, Failed ones kept as failures."""
        computed = {k: e for k, e in results.items() if not isinstance(e, Failed)}
        for key, entry in results.items():
            if isinstance(entry, Failed):
                self.failures[name][key] = entry.reason
                self.log.warning(f"{name}: {label(key)} failed: {entry.reason}")
        if computed:
            self.writes.submit(self.memo.put_json_many, self.namespaces[name], computed)
            self.entries[name].update(computed)

    def finish(self) -> None:
        """Wait for every entry to be written (a failed write fails the step here), then
        rewrite each pack that lacked an entry, unless an image failed (retried next run:
        a pack holds every entry of the batch or is not written)."""
        self.writes.wait()
        for name, namespace in self.namespaces.items():
            if self.pack and not self._complete[name] and not self.failures[name]:
                entries = self.entries[name]
                self.memo.write_pack(namespace, self.pack, {k: entries[k] for k in self.keys})

    def counts(self, name: str) -> dict:
        hits, misses = self.hits[name], self.misses[name]
        lookups = hits + misses
        return {
            "memo_hits": hits,
            "memo_misses": misses,
            "memo_hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "memo_corrupt_entries": self.corrupt[name],
            "failed": len(self.failures[name]),
        }


@dataclass
class Reads:
    """What one run of stages read and where it computed (shared by the stages it ran)."""

    work_images_loaded: int = 0
    originals_fetched: int = 0
    bytes_fetched: int = 0
    decoded: int = 0
    fetch: FetchReport = field(default_factory=FetchReport)  # image bytes: copies, uploads
    chunk_size: int = CHUNK
    processes: int = 1
    workers: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS, MiB

    def metadata(self) -> dict:
        return {
            "work_images_loaded": self.work_images_loaded,
            "originals_fetched": self.originals_fetched,
            "image_bytes_fetched": self.bytes_fetched,
            "images_decoded": self.decoded,
            **self.fetch.metadata(),
            "chunk_size": self.chunk_size,
            "processes": self.processes,
            **worker_metadata(self.workers),
        }


@dataclass
class StageResult:
    """One stage's entries (by SHA-256) and failures, with its memo counts and the reads
    it shared with the stages run beside it."""

    entries: dict[str, dict]
    failures: dict[str, str]
    counts: dict
    reads: Reads
    compute_calls: list[int]  # images per call of compute

    def metadata(self) -> dict:
        return {**self.counts, **self.reads.metadata()}


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


def run_stages(
    stages: Sequence[Stage],
    sources: dict[str, str],
    *,
    memo: MemoStore,
    uploads: UploadsBucket,
    log,
    pack: str | None = None,
    chunk: int = CHUNK,
    processes: int | None = None,
) -> dict[str, StageResult]:
    """Entries of every stage for every SHA-256 in ``sources`` (sha -> upload key),
    computing only misses, from one read and one decode of each working copy per run.

    With ``processes > 1``, stages' computes must be picklable (module-level functions or
    partials of them); a stage that may not leave this process keeps them all here.
    ``processes=None``: :func:`auto_processes` of the images to compute.
    """
    names = {stage.name: stage.namespace for stage in stages}
    run = MemoRun(memo, names, sources, pack=pack, log=log, label="stages")
    missing = {name: set(run.missing(name)) for name in names}
    todo = [sha for sha in sources if any(sha in m for m in missing.values())]
    processes = auto_processes(processes, len(todo), chunk)
    if processes > 1 and not all(stage.in_workers for stage in stages):
        log.info(f"{', '.join(s.name for s in stages)}: computed in this process, not in "
                 f"{processes} worker processes")  # fmt: skip
        processes = 1
    reads = Reads(chunk_size=chunk, processes=processes)
    calls: dict[str, list[int]] = {name: [] for name in names}

    def chunks() -> Iterator[tuple[dict, tuple[dict, dict[str, bytes]]]]:
        # Drawn lazily by imap_chunks: a chunk's copies are fetched when a worker needs them.
        for start in range(0, len(todo), chunk):
            shas = todo[start : start + chunk]
            wanted = {name: [s for s in shas if s in missing[name]] for name in names}
            yield wanted, (wanted, _working_copies(shas, sources, memo, uploads, reads))

    done, total = 0, -(-len(todo) // chunk)
    work = partial(compute_payload, list(stages))
    for wanted, outcome in imap_chunks(work, chunks(), processes, total):
        note_worker(reads.workers, outcome.worker)
        reads.decoded += outcome.decoded
        if outcome.unreadable:
            _repair(stages, wanted, outcome, run, sources, memo, uploads, reads, log)
        for name, results in outcome.results.items():
            calls[name] += [len(results)] if results else []
            run.record(name, results, lambda sha: sources[sha])
        done += len({sha for keys in wanted.values() for sha in keys})
        log.info(f"stages: computed {done}/{len(todo)} ({100 * done // len(todo)}%)")
    run.finish()
    return {
        name: StageResult(
            run.entries[name], run.failures[name], run.counts(name), reads, calls[name]
        )
        for name in names
    }


def _repair(stages, wanted, outcome: StagesOutcome, run, sources, memo, uploads, reads, log):
    """Working copies that did not decode (a damaged cache entry) are rebuilt from their
    uploads and computed here (rare: not queued to a worker again)."""
    for sha, why in outcome.unreadable.items():
        for name, keys in wanted.items():
            run.corrupt[name] += sha in keys
        log.warning(f"working copy {sha[:12]} unreadable, rebuilt from the upload ({why})")
    copies = _rebuild(list(outcome.unreadable), sources, memo, uploads, reads)
    again = {name: [s for s in keys if s in copies] for name, keys in wanted.items()}
    rebuilt = compute_stages(stages, again, copies)
    reads.decoded += rebuilt.decoded
    for name, results in rebuilt.results.items():
        outcome.results.setdefault(name, {}).update(results)


def _working_copies(shas, sources, memo, uploads, reads: Reads) -> dict[str, bytes]:
    """Encoded bytes of each working copy; copies gone from the memo are rebuilt from uploads.

    Not decoded here: the chunk's worker decodes them, and reports those that do not open.
    """
    blobs, _ = memo.get_many(WORK_NAMESPACE, shas, totals=reads.fetch)
    reads.work_images_loaded += len(blobs)
    reads.bytes_fetched += sum(len(b) for b in blobs.values())
    lost = [sha for sha in shas if sha not in blobs]
    if lost:
        blobs.update(_rebuild(lost, sources, memo, uploads, reads))
    return {sha: blobs[sha] for sha in shas}


def _rebuild(shas, sources, memo, uploads, reads: Reads) -> dict[str, bytes]:
    """Working copies are a cache too: rebuilt from the uploads, and stored again."""
    report = uploads.fetch([sources[sha] for sha in shas])
    reads.fetch += report.without_bytes()
    if report.errors:
        raise dg.Failure(f"could not re-fetch {len(report.errors)} uploads: {report.errors}")
    reads.originals_fetched += len(report.data)
    reads.bytes_fetched += report.bytes_fetched
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
