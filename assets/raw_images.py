import hashlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.batch_map import WORK_NAMESPACE
from assets.tables import content_version, preview
from assets.versions import RAW_IMAGES_VERSION, WORK_VERSION
from orchestration.partitions import BatchKey, upload_batch_partitions
from photogroup.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, sniff_content_type
from photogroup.manifest import ACCEPTED, REJECTED, Inspection, inspect_upload
from resources.memo import MemoStore
from resources.s3 import FetchReport
from resources.uploads import UploadedObject, UploadsBucket

#: Uploads fetched and inspected at once: bounds the bytes held in memory.
CHUNK = 32
COLUMNS = ["key", "file", "size", "etag", "sha256", "content_type", "width", "height",
           "frames", "status", "reason"]  # fmt: skip


def _object_memo_key(obj: UploadedObject) -> str:
    # An ETag with the size names the bytes without reading them (MD5 for single-part
    # uploads), so an object seen before, under any key or batch, is never fetched again.
    return hashlib.sha256(f"{obj.etag}:{obj.size}".encode()).hexdigest()


class ManifestConfig(dg.Config):
    """Limits that turn an upload into a rejection (part of the memo key: changing one
    re-inspects the batch)."""

    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, description="Largest upload accepted.")
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, description="Most decoded pixels (width x height) accepted."
    )


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=f"{RAW_IMAGES_VERSION}.{WORK_VERSION}",
    check_specs=[dg.AssetCheckSpec("every_object_accounted_for", asset="raw_images")],
)
def raw_images(
    context: dg.AssetExecutionContext,
    config: ManifestConfig,
    uploads: UploadsBucket,
    memo: MemoStore,
):
    """One row per uploaded object of the batch: key, file, size, ETag, SHA-256, content
    type sniffed from the bytes, pixel size, and status accepted/rejected with a reason."""
    batch = BatchKey.parse(context.partition_key)
    objects = uploads.list_batch(batch.tenant, batch.batch)
    namespace = f"fingerprint/{RAW_IMAGES_VERSION}/{config.max_bytes}-{config.max_pixels}"
    memo_keys = {obj.key: _object_memo_key(obj) for obj in objects}
    known, pack_complete = memo.lookup(
        namespace,
        memo_keys.values(),
        lambda k, why: context.log.warning(f"memo entry {k[:12]} recomputed: {why}"),
        pack=context.partition_key,
    )
    new = [obj for obj in objects if memo_keys[obj.key] not in known]
    context.log.info(f"{len(objects)} objects, {len(objects) - len(new)} known, {len(new)} new")
    rows, fetched = _inspect(new, uploads, memo, config, context.log)
    fresh = {memo_keys[key]: row for key, row in rows.items()}
    memo.put_json_many(namespace, fresh)
    found = {**fresh, **known}
    if not pack_complete:
        memo.write_pack(namespace, context.partition_key, found)
    table = pd.DataFrame(
        [{**obj.__dict__, **found[memo_keys[obj.key]]} for obj in objects], columns=COLUMNS
    )
    rejected = table[table.status != ACCEPTED]
    hits = len(objects) - len(new)
    yield dg.Output(
        table,
        data_version=content_version(table, ["key", "sha256", "status", "reason"]),
        metadata={
            "objects": len(table),
            "accepted": int((table.status == ACCEPTED).sum()),
            "rejected": len(rejected),
            "memo_hits": hits,
            "memo_misses": len(new),
            "memo_hit_rate": round(hits / len(objects), 4) if objects else 0.0,
            **fetched,
            "rejections": preview(rejected, ["file", "content_type", "reason"], rows=50),
            "preview": preview(
                table, ["file", "size", "content_type", "width", "height", "status"]
            ),
        },
    )
    listed_again = {o.key for o in uploads.list_batch(batch.tenant, batch.batch)}
    missing = sorted(listed_again - set(table.key))
    yield dg.AssetCheckResult(
        check_name="every_object_accounted_for",
        passed=bool(not missing and table.key.is_unique),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "objects_listed": len(listed_again),
            "manifest_rows": len(table),
            "rejected": len(rejected),
            "not_in_manifest": dg.MetadataValue.json(missing[:100]),
        },
    )


def _inspect(new: list[UploadedObject], uploads, memo, config: ManifestConfig, log):
    """Manifest rows for objects not seen before, fetched and decoded chunk by chunk."""
    rows: dict[str, dict] = {}
    totals = FetchReport()
    for obj in new:
        if obj.size > config.max_bytes:  # rejected on its listed size: never downloaded
            head = uploads.read_head(obj.key)
            reason = f"file_too_large: {obj.size} bytes > limit of {config.max_bytes}"
            rows[obj.key] = Inspection(
                None, sniff_content_type(head), None, None, None, REJECTED, reason, None
            ).row()
    fetchable = [obj for obj in new if obj.key not in rows]
    inspect = partial(inspect_upload, max_pixels=config.max_pixels, max_bytes=config.max_bytes)
    for start in range(0, len(fetchable), CHUNK):
        part = fetchable[start : start + CHUNK]
        report = uploads.fetch([obj.key for obj in part])
        if report.errors:
            raise dg.Failure(
                f"{len(report.errors)} uploads could not be fetched after retries",
                metadata={"failed_keys": dg.MetadataValue.json(report.errors)},
            )
        totals += report.without_bytes()
        with ThreadPoolExecutor() as pool:  # Pillow releases the GIL while decoding
            inspected = list(pool.map(inspect, (report.data[obj.key] for obj in part)))
        memo.put_many(WORK_NAMESPACE, {i.sha256: i.work_png for i in inspected if i.work_png})
        rows.update({obj.key: i.row() for obj, i in zip(part, inspected, strict=True)})
        done = start + len(part)
        log.info(f"raw_images: inspected {done}/{len(fetchable)} new uploads")
    return rows, totals.metadata()
