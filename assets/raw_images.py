import hashlib
from functools import partial

import dagster as dg
import pandas as pd
from botocore.exceptions import ClientError
from pydantic import Field

from assets import product_images as rend
from assets.engine import (
    WORK_NAMESPACE,
    ChunkConfig,
    MemoRun,
    auto_processes,
    note_worker,
    worker_metadata,
)
from assets.preset import BATCH_MULTI, batch_out, selected_outputs
from assets.tables import content_version, preview
from assets.versions import RAW_IMAGES_VERSION, RENDITIONS_VERSION, WORK_VERSION
from orchestration.partitions import BatchKey
from photogroup.chunks import imap_chunks, with_worker
from photogroup.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, sniff_content_type
from photogroup.manifest import ACCEPTED, REJECTED, Inspection, inspect_uploads
from resources.memo import MemoStore
from resources.parquet_io_manager import ParquetS3IOManager
from resources.s3 import FetchReport
from resources.uploads import UploadedObject, UploadsBucket

#: Uploads fetched and inspected at once (per process): bounds the bytes held in memory.
CHUNK = 32
COLUMNS = ["key", "file", "size", "etag", "sha256", "content_type", "width", "height",
           "frames", "status", "reason"]  # fmt: skip


def _object_memo_key(obj: UploadedObject) -> str:
    # An ETag with the size names the bytes without reading them (MD5 for single-part
    # uploads), so an object seen before, under any key or batch, is never fetched again.
    return hashlib.sha256(f"{obj.etag}:{obj.size}".encode()).hexdigest()


DESCRIPTION = """One row per uploaded object of the batch: key, file, size, ETag, SHA-256,
content type sniffed from the bytes, pixel size, and status accepted/rejected with a
reason."""


class ManifestConfig(ChunkConfig):
    """Limits that turn an upload into a rejection (part of the memo key: changing one
    re-inspects the batch), and how new uploads are split (not part of it)."""

    chunk_size: int = Field(
        default=CHUNK,
        ge=1,
        description="New uploads fetched and inspected per chunk: memory holds "
        "(processes + 1) chunks of upload bytes.",
    )

    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, description="Largest upload accepted.")
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, description="Most decoded pixels (width x height) accepted."
    )


class UploadsConfig(ManifestConfig, rend.RenditionsConfig):
    """The step's config: the manifest's limits and chunks, and the renditions' settings."""


@dg.multi_asset(
    **BATCH_MULTI,
    name="raw_images",
    outs={
        "raw_images": batch_out(f"{RAW_IMAGES_VERSION}.{WORK_VERSION}", DESCRIPTION),
        "product_images": batch_out(RENDITIONS_VERSION, rend.DESCRIPTION),
    },
    internal_asset_deps={"raw_images": set(), "product_images": {dg.AssetKey("raw_images")}},
    can_subset=True,
    check_specs=[
        dg.AssetCheckSpec("every_object_accounted_for", asset="raw_images"),
        dg.AssetCheckSpec(rend.CHECK, asset="product_images"),
    ],
)
def raw_images(
    context: dg.AssetExecutionContext,
    config: UploadsConfig,
    uploads: UploadsBucket,
    memo: MemoStore,
    io_manager: dg.ResourceParam[ParquetS3IOManager],
):
    """The manifest and the renditions from one GET and one decode of each new upload;
    either table can be materialised alone (renditions alone read the stored manifest)."""
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    renditions = None
    if "product_images" in selected:
        renditions = rend.Renditions(config.spec(), memo)
    outputs = []
    if "raw_images" not in selected:
        table = _stored_manifest(io_manager, context.partition_key)
    else:
        table, meta = _manifest(context, config, uploads, memo, renditions)
        version = content_version(table, ["key", "sha256", "status", "reason"])
        outputs += [dg.Output(table, output_name="raw_images", data_version=version,
                              metadata=meta), _accounted_for(table, uploads, context)]  # fmt: skip
    if renditions is not None:
        outputs += rend.renditions_outputs(context, table, renditions, uploads)
    yield from selected_outputs(context, outputs)


def _stored_manifest(io_manager: ParquetS3IOManager, partition_key: str) -> pd.DataFrame:
    try:
        return io_manager.read(dg.AssetKey("raw_images"), partition_key)
    except ClientError as exc:
        raise dg.Failure(f"raw_images of {partition_key} is not materialised: {exc}") from exc


def _manifest(context, config, uploads: UploadsBucket, memo: MemoStore, renditions):
    """The batch's manifest (new uploads fetched, decoded and memoised, with their
    renditions when ``renditions`` collects them) and its metadata."""
    batch = BatchKey.parse(context.partition_key)
    objects = uploads.list_batch(batch.tenant, batch.batch)
    memo_keys = {obj.key: _object_memo_key(obj) for obj in objects}
    namespace = f"fingerprint/{RAW_IMAGES_VERSION}/{config.max_bytes}-{config.max_pixels}"
    run = MemoRun(memo, {"raw_images": namespace}, memo_keys.values(),
                  pack=context.partition_key, log=context.log, label="raw_images")  # fmt: skip
    missing = set(run.missing("raw_images"))
    new = [obj for obj in objects if memo_keys[obj.key] in missing]
    fetched, workers = _inspect(new, memo_keys, run, uploads, memo, config, context.log,
                                renditions)  # fmt: skip
    run.finish()
    found = run.entries["raw_images"]
    table = pd.DataFrame(
        [{**obj.__dict__, **found[memo_keys[obj.key]]} for obj in objects], columns=COLUMNS
    )
    return table, _metadata(table, len(new), fetched, workers, config)


def _metadata(table: pd.DataFrame, new: int, fetched: dict, workers: dict, config) -> dict:
    rejected = table[table.status != ACCEPTED]
    hits = len(table) - new  # by object: two objects with the same bytes are two lookups
    return {
        "objects": len(table),
        "accepted": int((table.status == ACCEPTED).sum()),
        "rejected": len(rejected),
        # What the batch holds by sniffed format, and why uploads were rejected (by code).
        "formats": dg.MetadataValue.json(_counts(table.content_type.fillna("unknown"))),
        "rejected_by_reason": dg.MetadataValue.json(
            _counts(rejected.reason.fillna("").str.split(":").str[0])
        ),
        "memo_hits": hits,
        "memo_misses": new,
        "memo_hit_rate": round(hits / len(table), 4) if len(table) else 0.0,
        **fetched,
        "chunk_size": config.chunk_size,
        **worker_metadata(workers),
        "rejections": preview(rejected, ["file", "content_type", "reason"], rows=50),
        "preview": preview(table, ["file", "size", "content_type", "width", "height", "status"]),
    }


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}


def _accounted_for(table: pd.DataFrame, uploads: UploadsBucket, context) -> dg.AssetCheckResult:
    """Listed again after the manifest was built: an object that arrived meanwhile shows."""
    batch = BatchKey.parse(context.partition_key)
    listed_again = {o.key for o in uploads.list_batch(batch.tenant, batch.batch)}
    missing = sorted(listed_again - set(table.key))
    return dg.AssetCheckResult(
        check_name="every_object_accounted_for",
        asset_key="raw_images",
        passed=bool(not missing and table.key.is_unique),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "objects_listed": len(listed_again),
            "manifest_rows": len(table),
            "rejected": int((table.status != ACCEPTED).sum()),
            "not_in_manifest": dg.MetadataValue.json(missing[:100]),
        },
    )


def _inspect(new: list[UploadedObject], memo_keys, run: MemoRun, uploads, memo, config, log,
             renditions: rend.Renditions | None):  # fmt: skip
    """Manifest rows for objects not seen before, fetched and decoded chunk by chunk (in
    worker processes if configured; fetching and memo writes stay here), each chunk's rows
    and working copies memoised as it finishes; renditions made from the same decode are
    stored as each chunk finishes (their memo entries are written by product_images')."""
    rows: dict[str, dict] = {}
    totals = FetchReport()
    for obj in new:
        if obj.size > config.max_bytes:  # rejected on its listed size: never downloaded
            head = uploads.read_head(obj.key)
            reason = f"file_too_large: {obj.size} bytes > limit of {config.max_bytes}"
            rows[memo_keys[obj.key]] = Inspection(
                None, sniff_content_type(head), None, None, None, REJECTED, reason, None
            ).row()
    run.record("raw_images", rows)
    fetchable = [obj for obj in new if memo_keys[obj.key] not in rows]

    def chunks():
        nonlocal totals
        for start in range(0, len(fetchable), config.chunk_size):
            part = fetchable[start : start + config.chunk_size]
            report = uploads.fetch([obj.key for obj in part])
            if report.errors:
                raise dg.Failure(
                    f"{len(report.errors)} uploads could not be fetched after retries",
                    metadata={"failed_keys": dg.MetadataValue.json(report.errors)},
                )
            totals += report.without_bytes()
            yield part, [report.data[obj.key] for obj in part]

    limits = {"max_pixels": config.max_pixels, "max_bytes": config.max_bytes}
    spec = renditions.spec if renditions is not None else None
    inspect = partial(with_worker, partial(inspect_uploads, **limits, renditions=spec))
    done, workers = 0, {}
    total = -(-len(fetchable) // config.chunk_size)
    processes = auto_processes(config.processes, len(fetchable), config.chunk_size)
    for part, (inspected, worker) in imap_chunks(inspect, chunks(), processes, total):
        note_worker(workers, worker)
        run.writes.submit(memo.put_many, WORK_NAMESPACE,
                          {i.sha256: i.work_bytes for i in inspected if i.work_bytes})  # fmt: skip
        if renditions is not None:
            renditions.add(inspected, [obj.size for obj in part])
        run.record(
            "raw_images", {memo_keys[o.key]: i.row() for o, i in zip(part, inspected, strict=True)}
        )
        done += len(part)
        log.info(f"raw_images: inspected {done}/{len(fetchable)} new uploads")
    return {**totals.metadata(), "processes": processes}, workers
