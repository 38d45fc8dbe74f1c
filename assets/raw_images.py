import hashlib
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd

from assets.batch_map import WORK_NAMESPACE
from assets.tables import content_version, preview
from assets.versions import RAW_IMAGES_VERSION
from orchestration.partitions import BatchKey, upload_batch_partitions
from photogroup.manifest import ACCEPTED, inspect_upload
from resources.memo import MemoStore
from resources.uploads import UploadedObject, UploadsBucket

FINGERPRINT_NAMESPACE = f"fingerprint/{RAW_IMAGES_VERSION}"
COLUMNS = ["key", "file", "size", "etag", "sha256", "content_type", "width", "height",
           "frames", "status", "reason"]  # fmt: skip


def _object_memo_key(obj: UploadedObject) -> str:
    # An ETag with the size names the bytes without reading them (MD5 for single-part
    # uploads), so an object seen before, under any key or batch, is never fetched again.
    return hashlib.sha256(f"{obj.etag}:{obj.size}".encode()).hexdigest()


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=RAW_IMAGES_VERSION,
    check_specs=[dg.AssetCheckSpec("every_object_accounted_for", asset="raw_images")],
)
def raw_images(context: dg.AssetExecutionContext, uploads: UploadsBucket, memo: MemoStore):
    """One row per uploaded object of the batch: key, file, size, ETag, SHA-256, content
    type sniffed from the bytes, pixel size, and status accepted/rejected with a reason."""
    batch = BatchKey.parse(context.partition_key)
    objects = uploads.list_batch(batch.tenant, batch.batch)
    memo_keys = {obj.key: _object_memo_key(obj) for obj in objects}
    known, pack_complete = memo.lookup(
        FINGERPRINT_NAMESPACE,
        memo_keys.values(),
        lambda k, why: context.log.warning(f"memo entry {k[:12]} recomputed: {why}"),
        pack=context.partition_key,
    )
    new = [obj for obj in objects if memo_keys[obj.key] not in known]
    context.log.info(f"{len(objects)} objects, {len(objects) - len(new)} known, {len(new)} new")
    report = uploads.fetch([obj.key for obj in new])
    if report.errors:
        raise dg.Failure(
            f"{len(report.errors)} of {len(new)} uploads could not be fetched after retries",
            metadata={"failed_keys": dg.MetadataValue.json(report.errors)},
        )
    with ThreadPoolExecutor() as pool:  # Pillow releases the GIL while decoding
        inspected = list(pool.map(inspect_upload, (report.data[o.key] for o in new)))
    memo.put_many(WORK_NAMESPACE, {i.sha256: i.work_png for i in inspected if i.work_png})
    fresh = {memo_keys[o.key]: i.row() for o, i in zip(new, inspected, strict=True)}
    memo.put_json_many(FINGERPRINT_NAMESPACE, fresh)
    found = {**fresh, **known}
    if not pack_complete:
        memo.write_pack(FINGERPRINT_NAMESPACE, context.partition_key, found)
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
            **report.metadata(),
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
