import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.engine import MemoRun
from assets.image_features import accepted_sources
from assets.preset import BATCH
from assets.tables import content_version, preview
from assets.versions import RENDITIONS_VERSION
from photogroup import Rejection
from photogroup.chunks import Failed
from photogroup.manifest import ACCEPTED
from photogroup.renditions import Rendition, RenditionSpec, render
from resources.memo import MemoStore
from resources.s3 import put_objects
from resources.uploads import UploadsBucket

COLUMNS = ["key", "file", "sha256", "size", "format", "width", "height", "bytes",
           "original_bytes", "saving", "rendition_key", "status", "reason"]  # fmt: skip
PREVIEW_COLUMNS = ["file", "size", "format", "width", "height", "bytes", "saving"]
VERSION_COLUMNS = ["key", "rendition_key", "bytes", "status"]
CONTENT_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}
#: Originals decoded and encoded at once: bounds memory to a chunk of full-size images.
CHUNK = 16


class RenditionsConfig(dg.Config):
    sizes: list[int] = Field(default=[256, 512, 1024], description="Long sides, in px.")
    formats: list[str] = Field(default=["webp", "jpeg"], description="webp and/or jpeg.")
    jpeg_quality: int = 85
    webp_quality: int = 80

    def spec(self) -> RenditionSpec:
        return RenditionSpec(tuple(self.sizes), tuple(self.formats),
                             self.jpeg_quality, self.webp_quality)  # fmt: skip


def rendition_key(spec: RenditionSpec, sha: str, size: int, fmt: str) -> str:
    """Content-addressed: the source's SHA-256 and the settings decide the key."""
    ext = "jpg" if fmt == "jpeg" else fmt
    return f"renditions/v{RENDITIONS_VERSION}-{spec.digest()}/{sha[:2]}/{sha}/{size}.{ext}"


@dg.asset(
    **BATCH,
    code_version=RENDITIONS_VERSION,
    check_specs=[dg.AssetCheckSpec("every_image_rendered", asset="product_images")],
)
def product_images(
    context: dg.AssetExecutionContext,
    config: RenditionsConfig,
    raw_images: pd.DataFrame,
    memo: MemoStore,
    uploads: UploadsBucket,
):
    """Web renditions of every accepted image (each configured size as WebP and JPEG,
    oriented, sRGB, metadata stripped) on the pipeline bucket under content-addressed keys;
    one manifest row per file, size and format. Memoised on the image's bytes and the
    settings: an unchanged image is neither fetched nor encoded again."""
    try:
        spec = config.spec()
    except ValueError as exc:
        raise dg.Failure(f"invalid renditions config: {exc}") from exc
    namespace = f"renditions/{RENDITIONS_VERSION}/{spec.digest()}"
    sources = accepted_sources(raw_images)
    run = MemoRun(memo, {"product_images": namespace}, sources, pack=context.partition_key,
                  log=context.log, label="renditions")  # fmt: skip
    missing = run.missing("product_images")
    stats = {"encoded": 0, "bytes_written": 0, "originals_fetched": 0}
    for start in range(0, len(missing), CHUNK):
        shas = missing[start : start + CHUNK]
        run.record("product_images", _render_chunk(shas, sources, spec, memo, uploads, stats),
                   lambda sha: sources[sha])  # fmt: skip
        context.log.info(f"renditions: {start + len(shas)}/{len(missing)} images encoded")
    run.finish()
    failures = run.failures["product_images"]
    table = _manifest(raw_images, run.entries["product_images"], failures)
    yield dg.Output(table, data_version=content_version(table, VERSION_COLUMNS),
                    metadata=_metadata(table, run, stats, config, memo.bucket, spec))  # fmt: skip
    yield _rendered_check(raw_images, table, failures)


def _metadata(table, run: MemoRun, stats: dict, config, bucket: str, spec) -> dict:
    ok = table[table.status == "ok"]
    saved = int((ok.original_bytes - ok.bytes).sum()) if len(ok) else 0
    return {
        "images": len(run.keys),
        "renditions": len(ok),
        "failed_images": len(run.failures["product_images"]),
        "memo_hits": run.hits["product_images"],
        "memo_misses": run.misses["product_images"],
        **stats,
        "settings": dg.MetadataValue.json(dict(config)),
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
        check_name="every_image_rendered",
        passed=not missing_keys,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "not_rendered": dg.MetadataValue.json(missing_keys[:100]),
            "reasons": dg.MetadataValue.json(dict(list(failures.items())[:100])),
        },
    )


def _render_chunk(shas, sources, spec, memo, uploads, stats) -> dict[str, dict | Failed]:
    """An entry (the renditions written) or Failed (with why) per image of the chunk."""
    report = uploads.fetch([sources[sha] for sha in shas])
    stats["originals_fetched"] += len(report.data)
    done: dict[str, dict | Failed] = {
        sha: Failed(f"fetch failed: {report.errors[sources[sha]]}")
        for sha in shas
        if sources[sha] in report.errors
    }

    def one(sha: str) -> tuple[str, list[Rendition] | str]:
        try:
            return sha, render(report.data[sources[sha]], spec)
        except Rejection as exc:
            return sha, str(exc)

    fetched = [sha for sha in shas if sources[sha] in report.data]
    # Pillow releases the GIL while resizing and encoding: threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = list(pool.map(one, fetched))
    objects: dict[str, dict[str, bytes]] = {}
    for sha, outcome in results:
        if isinstance(outcome, str):
            done[sha] = Failed(outcome)
            continue
        original = len(report.data[sources[sha]])
        items = []
        for r in outcome:
            key = rendition_key(spec, sha, r.size, r.format)
            objects.setdefault(r.format, {})[key] = r.data
            items.append({"size": r.size, "format": r.format, "width": r.width,
                          "height": r.height, "bytes": len(r.data), "key": key})  # fmt: skip
        done[sha] = {"original_bytes": original, "renditions": items}
    for fmt, blobs in objects.items():
        put_objects(memo.s3.get_client(), memo.bucket, blobs, CONTENT_TYPES[fmt])
        stats["encoded"] += len(blobs)
        stats["bytes_written"] += sum(len(b) for b in blobs.values())
    return done


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
