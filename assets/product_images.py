import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.image_features import accepted_sources
from assets.tables import content_version, preview
from assets.versions import RENDITIONS_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup import Rejection
from photogroup.manifest import ACCEPTED
from photogroup.renditions import Rendition, RenditionSpec, render
from resources.memo import MemoStore
from resources.s3 import put_objects
from resources.uploads import UploadsBucket

COLUMNS = ["key", "file", "sha256", "size", "format", "width", "height", "bytes",
           "original_bytes", "saving", "rendition_key", "status", "reason"]  # fmt: skip
PREVIEW_COLUMNS = ["file", "size", "format", "width", "height", "bytes", "saving"]
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
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
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
    entries, pack_complete = memo.lookup(
        namespace,
        sources,
        lambda k, why: context.log.warning(f"renditions memo {k[:12]}: {why}"),
        pack=context.partition_key,
    )
    missing = [sha for sha in sources if sha not in entries]
    context.log.info(f"renditions: {len(entries)} memo hits, {len(missing)} to encode")
    failures: dict[str, str] = {}
    stats = {"encoded": 0, "bytes_written": 0, "originals_fetched": 0}
    for start in range(0, len(missing), CHUNK):
        shas = missing[start : start + CHUNK]
        done = _render_chunk(shas, sources, spec, memo, uploads, failures, stats)
        memo.put_json_many(namespace, done)  # per chunk: a run that dies keeps its work
        entries.update(done)
        context.log.info(f"renditions: {start + len(shas)}/{len(missing)} images encoded")
    if not pack_complete and not failures:
        memo.write_pack(namespace, context.partition_key, {s: entries[s] for s in sources})
    table = _manifest(raw_images, entries, failures)
    ok = table[table.status == "ok"]
    saved = int((ok.original_bytes - ok.bytes).sum()) if len(ok) else 0
    yield dg.Output(
        table,
        data_version=content_version(table, ["key", "rendition_key", "bytes", "status"]),
        metadata={
            "images": len(sources),
            "renditions": len(ok),
            "failed_images": len(failures),
            "memo_hits": len(sources) - len(missing),
            "memo_misses": len(missing),
            **stats,
            "settings": dg.MetadataValue.json(dict(config)),
            "location": dg.MetadataValue.path(
                f"s3://{memo.bucket}/renditions/v{RENDITIONS_VERSION}-{spec.digest()}/"
            ),
            "median_saving_by_size": dg.MetadataValue.json(
                {
                    f"{s}/{f}": round(float(g.saving.median()), 4)
                    for (s, f), g in ok.groupby(["size", "format"])
                }
            ),
            "total_bytes_saved_per_set": saved,
            "preview": preview(ok, PREVIEW_COLUMNS, 12),
        },
    )
    accepted = raw_images[raw_images.status == ACCEPTED]
    missing_keys = sorted(set(accepted.key) - set(ok.key))
    yield dg.AssetCheckResult(
        check_name="every_image_rendered",
        passed=not missing_keys,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "not_rendered": dg.MetadataValue.json(missing_keys[:100]),
            "reasons": dg.MetadataValue.json(dict(list(failures.items())[:100])),
        },
    )


def _render_chunk(shas, sources, spec, memo, uploads, failures, stats) -> dict[str, dict]:
    report = uploads.fetch([sources[sha] for sha in shas])
    stats["originals_fetched"] += len(report.data)
    for sha in shas:
        if sources[sha] in report.errors:
            failures[sha] = f"fetch failed: {report.errors[sources[sha]]}"

    def one(sha: str) -> tuple[str, list[Rendition] | str]:
        try:
            return sha, render(report.data[sources[sha]], spec)
        except Rejection as exc:
            return sha, str(exc)

    fetched = [sha for sha in shas if sources[sha] in report.data]
    # Pillow releases the GIL while resizing and encoding: threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = list(pool.map(one, fetched))
    done, objects = {}, {}
    for sha, outcome in results:
        if isinstance(outcome, str):
            failures[sha] = outcome
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
