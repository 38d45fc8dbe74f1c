"""Memoised map over a batch's images: memo -> working copy -> core function -> entry.

Shared by the stages that need pixels. A stage looks its entries up by SHA-256 in one
concurrent batch; only misses load a working copy (the small normalised PNG that
raw_images stored), and only a missing working copy sends it back to the upload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
from PIL import Image

from assets.versions import WORK_VERSION
from photogroup import Rejection, decode_image, encode_work_image, open_work_image
from resources.memo import MemoStore
from resources.s3 import FetchReport
from resources.uploads import UploadsBucket

WORK_NAMESPACE = f"work/{WORK_VERSION}"
#: Images decoded and computed per chunk: bounds memory to a chunk of working copies.
CHUNK = 64


@dataclass(frozen=True)
class Failed:
    """What ``compute`` returns for an image it could not process (a provider refused it).

    Failed images are reported and left out of the memo, so the next run tries them again.
    """

    reason: str


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
        }


def map_images(
    sources: dict[str, str],
    namespace: str,
    compute: Callable[[Sequence[Image.Image]], list[dict | Failed]],
    *,
    memo: MemoStore,
    uploads: UploadsBucket,
    log,
    label: str,
    pack: str | None = None,
    chunk: int = CHUNK,
) -> MapResult:
    """Entries for every SHA-256 in ``sources`` (sha -> upload key), computing only misses.

    ``pack`` (the partition key) names the batch's pack of entries, read first and
    rewritten when it did not already hold every entry.
    """
    result = MapResult()

    def corrupt(key: str, why: str) -> None:
        result.corrupt_entries += 1
        log.warning(f"{label}: memo entry {key[:12]} ignored and recomputed ({why})")

    result.entries, pack_complete = memo.lookup(namespace, sources, corrupt, pack=pack)
    result.hits = len(result.entries)
    missing = [sha for sha in sources if sha not in result.entries]
    result.misses = len(missing)
    log.info(f"{label}: {result.hits} memo hits, {result.misses} to compute")
    for start in range(0, len(missing), chunk):
        shas = missing[start : start + chunk]
        images = _working_images(shas, sources, memo, uploads, result, log)
        # Written per chunk: a run that dies later keeps what it finished.
        outcome = dict(zip(shas, compute([images[sha] for sha in shas]), strict=True))
        computed = {sha: e for sha, e in outcome.items() if not isinstance(e, Failed)}
        for sha, entry in outcome.items():
            if isinstance(entry, Failed):
                result.failures[sha] = entry.reason
                log.warning(f"{label}: {sources[sha]} failed: {entry.reason}")
        memo.put_json_many(namespace, computed)
        result.entries.update(computed)
        done = start + len(shas)
        log.info(f"{label}: computed {done}/{len(missing)} ({100 * done // len(missing)}%)")
    if pack and not pack_complete and not result.failures:
        memo.write_pack(namespace, pack, {sha: result.entries[sha] for sha in sources})
    return result


def _working_images(shas, sources, memo, uploads, result: MapResult, log) -> dict:
    blobs, _ = memo.get_many(WORK_NAMESPACE, shas, totals=result.fetch)
    result.work_images_loaded += len(blobs)
    result.bytes_fetched += sum(len(b) for b in blobs.values())
    images = {}
    for sha, blob in blobs.items():
        try:
            images[sha] = open_work_image(blob)
        except Exception as exc:  # any unreadable copy is rebuilt below
            result.corrupt_entries += 1
            log.warning(f"working copy {sha[:12]} unreadable, rebuilt from the upload ({exc})")
    lost = [sha for sha in shas if sha not in images]
    if lost:
        # Working copies are a cache too: rebuild them from the uploads if they are gone.
        report = uploads.fetch([sources[sha] for sha in lost])
        result.fetch += report.without_bytes()
        if report.errors:
            raise dg.Failure(f"could not re-fetch {len(report.errors)} uploads: {report.errors}")
        result.originals_fetched += len(report.data)
        result.bytes_fetched += report.bytes_fetched
        rebuilt = {}
        for sha in lost:
            data = report.data[sources[sha]]
            if hashlib.sha256(data).hexdigest() != sha:
                raise dg.Failure(f"{sources[sha]} changed since raw_images ran: re-run it first")
            try:
                rebuilt[sha] = decode_image(data).image
            except Rejection as exc:
                raise dg.Failure(f"{sources[sha]} no longer decodes: {exc}") from exc
        memo.put_many(WORK_NAMESPACE, {s: encode_work_image(im) for s, im in rebuilt.items()})
        images.update(rebuilt)
    return images
