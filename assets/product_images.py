"""product_images' table: web renditions of every accepted image, made from the manifest's
decode of each new upload (the raw_images step, assets/raw_images.py) and memoised by the
image's SHA-256 and the settings; images the manifest did not decode in this run (known
uploads, new settings, a step run for this table alone) are fetched and rendered here."""

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.engine import MemoRun
from assets.image_features import accepted_sources
from assets.tables import content_version, preview
from assets.versions import RENDITIONS_VERSION
from photogroup import Rejection
from photogroup.chunks import Failed
from photogroup.manifest import ACCEPTED, Inspection
from photogroup.renditions import MEDIA_TYPES, Rendition, RenditionSpec, render
from resources.memo import MemoStore
from resources.s3 import BackgroundWrites, put_objects
from resources.uploads import UploadsBucket

DESCRIPTION = """One row per accepted image, size and format: web renditions (each configured
size as WebP and JPEG, oriented, sRGB, metadata stripped) on the pipeline bucket under
content-addressed keys; a failed image is one row with status failed and its reason."""
CHECK = "every_image_rendered"
COLUMNS = ["key", "file", "sha256", "size", "format", "width", "height", "bytes",
           "original_bytes", "saving", "rendition_key", "status", "reason"]  # fmt: skip
PREVIEW_COLUMNS = ["file", "size", "format", "width", "height", "bytes", "saving"]
VERSION_COLUMNS = ["key", "rendition_key", "bytes", "status"]
#: Originals decoded and encoded at once: bounds memory to a chunk of full-size images.
CHUNK = 16


class RenditionsConfig(dg.Config):
    sizes: list[int] = Field(default=[256, 512, 1024], description="Long sides, in px.")
    formats: list[str] = Field(default=["webp", "jpeg"], description="webp and/or jpeg.")
    jpeg_quality: int = Field(default=85, description="JPEG quality of renditions, 1-100.")
    webp_quality: int = Field(default=80, description="WebP quality of renditions, 1-100.")

    def spec(self) -> RenditionSpec:
        try:
            return RenditionSpec(tuple(self.sizes), tuple(self.formats),
                                 self.jpeg_quality, self.webp_quality)  # fmt: skip
        except ValueError as exc:
            raise dg.Failure(f"invalid renditions config: {exc}") from exc


def rendition_key(spec: RenditionSpec, sha: str, size: int, fmt: str) -> str:
    """Content-addressed: the source's SHA-256 and the settings decide the key."""
    ext = "jpg" if fmt == "jpeg" else fmt
    return f"renditions/v{RENDITIONS_VERSION}-{spec.digest()}/{sha[:2]}/{sha}/{size}.{ext}"


def namespace(spec: RenditionSpec) -> str:
    return f"renditions/{RENDITIONS_VERSION}/{spec.digest()}"


class Renditions:
    """Renditions made in this run: stored as they come, their entries kept for the table.

    The manifest renders every upload it decodes, without asking the renditions' memo
    first: its memo key (ETag and size) is new, so its bytes almost always are too; the
    rare copy of known bytes under a new ETag is rendered again to the same keys."""

    def __init__(self, spec: RenditionSpec, memo: MemoStore) -> None:
        self.spec, self.memo = spec, memo
        self.made: dict[str, dict | Failed] = {}  # by SHA-256, for MemoRun(computed=...)
        self.stats = {"encoded": 0, "bytes_written": 0, "originals_fetched": 0}
        #: Renditions are PUT while the next chunk decodes; :meth:`wait` before the table.
        self.writes = BackgroundWrites()

    def add(self, inspected: list[Inspection], sizes: list[int]) -> None:
        """The renditions the manifest made from its decode of each upload (``sizes``:
        the uploads' byte counts)."""
        pairs = zip(inspected, sizes, strict=True)
        outcomes = {i.sha256: (i.renditions or i.rendition_error or "no renditions", n)
                    for i, n in pairs if i.status == ACCEPTED}  # fmt: skip
        self.store(outcomes)

    def store(self, outcomes: dict[str, tuple[list[Rendition] | str, int]]) -> None:
        """Each image's renditions (or why there are none) and its original's size."""
        objects: dict[str, dict[str, bytes]] = {}
        for sha, (made, original) in outcomes.items():
            if isinstance(made, str):
                self.made[sha] = Failed(made)
                continue
            items = []
            for r in made:
                key = rendition_key(self.spec, sha, r.size, r.format)
                objects.setdefault(r.format, {})[key] = r.data
                items.append({"size": r.size, "format": r.format, "width": r.width,
                              "height": r.height, "bytes": len(r.data), "key": key})  # fmt: skip
            self.made[sha] = {"original_bytes": original, "renditions": items}
        for blobs in objects.values():
            self.stats["encoded"] += len(blobs)
            self.stats["bytes_written"] += sum(len(b) for b in blobs.values())
        self.writes.submit(self._put, objects)

    def _put(self, objects: dict[str, dict[str, bytes]]) -> None:
        for fmt, blobs in objects.items():
            put_objects(self.memo.s3.get_client(), self.memo.bucket, blobs, MEDIA_TYPES[fmt])


def renditions_outputs(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    renditions: Renditions,
    uploads: UploadsBucket,
) -> Iterator:
    """product_images' table and check: renditions made with the manifest, memo hits, and
    the rest fetched and rendered here, chunk by chunk."""
    spec, memo = renditions.spec, renditions.memo
    sources = accepted_sources(raw_images)
    renditions.writes.wait()  # the manifest's renditions are stored before their entries
    run = MemoRun(memo, {"product_images": namespace(spec)}, sources,
                  pack=context.partition_key, log=context.log, label="renditions",
                  computed={"product_images": renditions.made})  # fmt: skip
    missing = run.missing("product_images")
    for start in range(0, len(missing), CHUNK):
        shas = missing[start : start + CHUNK]
        made = _render_chunk(shas, sources, uploads, renditions)
        renditions.writes.wait()
        run.record("product_images", made, lambda sha: sources[sha])
        context.log.info(f"renditions: {start + len(shas)}/{len(missing)} images encoded")
    run.finish()
    failures = run.failures["product_images"]
    table = _manifest(raw_images, run.entries["product_images"], failures)
    meta = _metadata(table, run, renditions.stats, memo.bucket, spec)
    yield dg.Output(table, output_name="product_images", metadata=meta,
                    data_version=content_version(table, VERSION_COLUMNS))  # fmt: skip
    yield _rendered_check(raw_images, table, failures)


def _metadata(table, run: MemoRun, stats: dict, bucket: str, spec: RenditionSpec) -> dict:
    ok = table[table.status == "ok"]
    saved = int((ok.original_bytes - ok.bytes).sum()) if len(ok) else 0
    return {
        "images": len(run.keys),
        "renditions": len(ok),
        "failed_images": len(run.failures["product_images"]),
        "memo_hits": run.hits["product_images"],
        "memo_misses": run.misses["product_images"],
        **stats,
        "settings": dg.MetadataValue.json(asdict(spec)),
        "location": dg.MetadataValue.path(
            f"s3://{bucket}/renditions/v{RENDITIONS_VERSION}-{spec.digest()}/"
        ),
        "median_saving_by_size": dg.MetadataValue.json(
            {
                f"{s}/{f}": round(float(g.saving.median()), 4)
                for (s, f), g in ok.groupby(["size", "format"])
            }
        ),
        "total_bytes_saved_per_set": saved,
        "preview": preview(ok, PREVIEW_COLUMNS, 12),
    }


def _rendered_check(raw_images, table, failures: dict[str, str]) -> dg.AssetCheckResult:
    accepted = raw_images[raw_images.status == ACCEPTED]
    missing_keys = sorted(set(accepted.key) - set(table[table.status == "ok"].key))
    return dg.AssetCheckResult(
        check_name=CHECK,
        asset_key="product_images",
        passed=not missing_keys,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "not_rendered": dg.MetadataValue.json(missing_keys[:100]),
            "reasons": dg.MetadataValue.json(dict(list(failures.items())[:100])),
        },
    )


def _render_chunk(shas, sources, uploads: UploadsBucket, renditions: Renditions) -> dict:
    """An entry (the renditions written) or Failed (with why) per image of the chunk, for
    images the manifest did not decode in this run."""
    report = uploads.fetch([sources[sha] for sha in shas])
    renditions.stats["originals_fetched"] += len(report.data)
    failed = {sha: Failed(f"fetch failed: {report.errors[sources[sha]]}")
              for sha in shas if sources[sha] in report.errors}  # fmt: skip

    def one(sha: str) -> tuple[str, tuple[list[Rendition] | str, int]]:
        data = report.data[sources[sha]]
        try:
            return sha, (render(data, renditions.spec), len(data))
        except Rejection as exc:
            return sha, (str(exc), len(data))

    fetched = [sha for sha in shas if sources[sha] in report.data]
    # Pillow releases the GIL while decoding, resizing and encoding: threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        outcomes = dict(pool.map(one, fetched))
    renditions.store(outcomes)
    return {**failed, **{sha: renditions.made[sha] for sha in outcomes}}


def _manifest(raw_images: pd.DataFrame, entries: dict, failures: dict) -> pd.DataFrame:
    rows = []
    for row in raw_images[raw_images.status == ACCEPTED].itertuples():
        if row.sha256 in failures:
            rows.append({"key": row.key, "file": row.file, "sha256": row.sha256,
                         "status": "failed", "reason": failures[row.sha256]})  # fmt: skip
            continue
        entry = entries[row.sha256]
        original = entry["original_bytes"]
        rows += [
            {"key": row.key, "file": row.file, "sha256": row.sha256, "size": r["size"],
             "format": r["format"], "width": r["width"], "height": r["height"],
             "bytes": r["bytes"], "original_bytes": original,
             "saving": round(1 - r["bytes"] / original, 4) if original else 0.0,
             "rendition_key": r["key"], "status": "ok", "reason": ""}
            for r in entry["renditions"]
        ]  # fmt: skip
    ints = ["size", "width", "height", "bytes", "original_bytes"]
    return pd.DataFrame(rows, columns=COLUMNS).astype({c: "Int64" for c in ints})
