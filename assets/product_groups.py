import base64
import hashlib
import io
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from assets.engine import WORK_NAMESPACE
from assets.preset import BATCH, GROUP
from assets.tables import batches_output, by_batch, content_version, preview
from assets.versions import PRODUCT_GROUPS_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup.colours import colour_name
from photogroup.contact_sheet import tile_sheet
from photogroup.decode import open_work_image
from photogroup.edits import APPLIED, HOLDS, NOT_APPLICABLE, parse_log
from photogroup.product_groups import edited_groups, machine_groups, product_group_table
from resources.edit_log import EditLog
from resources.memo import MemoStore
from resources.parquet_io_manager import Tables

#: People's corrections, written by `python -m orchestration groups edit`, which reports an
#: observation of this external asset with the log's data version: product_groups goes stale.
grouping_edits = dg.AssetSpec(
    "grouping_edits",
    partitions_def=upload_batch_partitions,
    group_name=GROUP,
    kinds={"s3"},
    description="Edit log of the batch's groups (rename, split, merge, move), JSON lines at "
    "s3://<pipeline-bucket>/edits/<tenant>/<batch>.jsonl.",
)
# Single-run backfills are deliberate, so Dagster's warnings about them would only be noise on
# every load: backfill_policy is beta, and image_pipeline_job mixing policies makes its job
# backfills one batch per run (as before); asset backfills use each asset's own policy.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
warnings.filterwarnings("ignore", category=UserWarning, message=".*varying BackfillPolicies.*")
#: Covers drawn in the preview: bounds the working copies read per batch.
PREVIEW_COVERS = 24
COVERS_NAMESPACE = f"covers/{PRODUCT_GROUPS_VERSION}"
#: Batches worked on at once in a run over several (edit log and covers reads).
RANGE_CONCURRENCY = 8
#: Batches listed by name in a range's check metadata.
CHECK_LISTED = 100
#: Upstream tables: a DataFrame for one batch, a dict of them for a run over several.
TABLE_INPUTS = ("raw_images", "image_features", "image_clusters")
STALE_DESCRIPTION = "Edits whose images moved apart after clustering re-ran need a person."


@dg.asset(
    **BATCH,
    code_version=PRODUCT_GROUPS_VERSION,
    deps=[grouping_edits],
    check_specs=[dg.AssetCheckSpec("every_edit_applies", asset="product_groups")],
    # Re-applying edits to many batches is one run (tables only); its inputs are then dicts.
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={name: dg.AssetIn(dagster_type=dg.Any) for name in TABLE_INPUTS},
)
def product_groups(
    context: dg.AssetExecutionContext,
    raw_images: Tables,
    image_features: Tables,
    image_clusters: Tables,
    edit_log: EditLog,
    memo: MemoStore,
):
    """One row per group: image_clusters with the batch's edit log applied, each group's
    name, cover image (sharpest, then largest) and members. Reads tables only: no image is
    fetched, featurised or embedded again.

    A run over several batches (single-run backfill) gets dicts partition key -> table and
    returns one; each batch's materialisation carries that batch's metadata, and the check
    covers every batch of the run."""
    keys = context.partition_keys
    inputs = [by_batch(keys, t) for t in (raw_images, image_features, image_clusters)]

    def one(key: str) -> tuple[_Grouped, dict]:
        done = _group(key, *(table[key] for table in inputs), edit_log)
        # Inline covers for one batch only: thousands of base64 sheets would be held.
        return done, _metadata(key, done, edit_log, memo, inline_covers=len(keys) == 1)

    with ThreadPoolExecutor(min(RANGE_CONCURRENCY, len(keys)), "product-groups") as pool:
        results = dict(zip(keys, pool.map(one, keys), strict=True))
    for key, (done, _) in results.items():
        _log(context, done, prefix=f"{key}: " if len(keys) > 1 else "")
    stale = {key: done.stale for key, (done, _) in results.items() if done.stale}
    tables = {key: done.table for key, (done, _) in results.items()}
    yield batches_output(context, tables, {k: m for k, (_, m) in results.items()}, _version,
                         _totals(results, stale))  # fmt: skip
    yield _edits_check(keys, stale)


def _totals(results: dict, stale: dict) -> dict:
    """The run's figures, on every batch's materialisation next to its own."""
    return {
        "run_groups": sum(len(d.table) for d, _ in results.values()),
        "run_edits": sum(len(d.edits) for d, _ in results.values()),
        "run_edits_not_applicable": sum(len(s) for s in stale.values()),
        "run_batches_with_stale_edits": len(stale),
    }


def _edits_check(keys: list[str], stale: dict[str, list]) -> dg.AssetCheckResult:
    listed = stale.get(keys[0], []) if len(keys) == 1 else dict(list(stale.items())[:CHECK_LISTED])
    return dg.AssetCheckResult(
        check_name="every_edit_applies",
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "batches_checked": len(keys),
            "batches_failing": len(stale),
            # One batch: its edits that no longer apply; a range: those of each batch.
            "not_applicable": dg.MetadataValue.json(listed),
        },
        description=f"{STALE_DESCRIPTION} Evaluated over the run's {len(keys)} batch(es).",
    )


@dataclass(frozen=True)
class _Grouped:
    """One batch's groups and how its edit log applied."""

    table: pd.DataFrame
    edits: list
    counts: dict[str, int]
    stale: list[dict]


def _group(
    partition_key: str,
    raw_images: pd.DataFrame,
    image_features: pd.DataFrame,
    image_clusters: pd.DataFrame,
    edit_log: EditLog,
) -> _Grouped:
    text, _ = edit_log.read(partition_key)
    edits = parse_log(text)
    groups, outcomes = edited_groups(image_clusters, edits)
    images = image_clusters[["key", "file", "sha256"]].merge(
        image_features[["key", "sharpness", "dominant_colors"]], on="key"
    ).merge(raw_images[["key", "width", "height"]], on="key")  # fmt: skip
    # Each image's own colour: a group an edit made has no machine colour to inherit.
    images["colour"] = [colour_name(c[0]) if len(c) else "" for c in images.dominant_colors]
    table = product_group_table(images, groups, machine_groups(image_clusters))
    counts = {s: sum(o.status == s for o in outcomes) for s in (APPLIED, HOLDS, NOT_APPLICABLE)}
    stale = [
        {"line": o.index, "op": o.op, "reason": o.reason, **_who(edits[o.index - 1])}
        for o in outcomes
        if o.status == NOT_APPLICABLE
    ]
    return _Grouped(table, edits, counts, stale)


def _log(context: dg.AssetExecutionContext, done: _Grouped, prefix: str) -> None:
    for item in done.stale:
        context.log.warning(f"{prefix}edit {item['line']} ({item['op']}) no longer applies: "
                            f"{item['reason']}")  # fmt: skip
    counts = done.counts
    context.log.info(
        f"{prefix}{len(done.edits)} edits: {counts[APPLIED]} applied, {counts[HOLDS]} already "
        f"held, {counts[NOT_APPLICABLE]} no longer apply; {len(done.table)} groups"
    )


def _version(table: pd.DataFrame) -> dg.DataVersion:
    return content_version(table, ["group_id", "product_id", "name", "member_shas"])


def _metadata(
    partition_key: str, done: _Grouped, edit_log: EditLog, memo: MemoStore, inline_covers: bool
) -> dict:
    table, counts = done.table, done.counts
    return {
        "groups": len(table),
        "products": int(table.product_id.nunique()),
        "named_groups": int(table.named.sum()),
        "edited_groups": int(table.edited.sum()),
        "edits": len(done.edits),
        "edits_applied": counts[APPLIED],
        "edits_already_held": counts[HOLDS],
        "edits_not_applicable": counts[NOT_APPLICABLE],
        "not_applicable": dg.MetadataValue.json(done.stale),
        "edit_log": dg.MetadataValue.path(f"s3://{edit_log.bucket}/{edit_log.key(partition_key)}"),
        "preview": preview(
            table.sort_values("size", ascending=False),
            ["name", "group_id", "product_id", "size", "colour", "cover_file"],
            20,
        ),
        **_cover_preview(table, memo, inline=inline_covers),
    }


def _who(edit) -> dict:
    return {"who": edit.who, "when": edit.when, "why": edit.why} if hasattr(edit, "who") else {}


def _cover_preview(table: pd.DataFrame, memo: MemoStore, inline: bool = True) -> dict:
    """The covers of the largest groups, captioned with their names; the sheet is stored
    content-addressed, so an unchanged batch reads one object instead of every cover."""
    if table.empty:
        return {}
    top = table.sort_values(["size", "group_id"], ascending=[False, True]).head(PREVIEW_COVERS)
    basis = json.dumps([[r.cover_sha256, r.name, int(r.size)] for r in top.itertuples()])
    key = hashlib.sha256(basis.encode()).hexdigest()
    stored, _ = memo.get_many(COVERS_NAMESPACE, [key])
    jpeg = stored.get(key)
    if jpeg is None:
        blobs, _ = memo.get_many(WORK_NAMESPACE, list(top.cover_sha256))
        tiles = [
            (f"{row.name} ({row.size})", open_work_image(blobs[row.cover_sha256]))
            for row in top.itertuples()
            if row.cover_sha256 in blobs
        ]
        buffer = io.BytesIO()
        tile_sheet(tiles).save(buffer, format="JPEG", quality=80)
        jpeg = buffer.getvalue()
        memo.put_many(COVERS_NAMESPACE, {key: jpeg})
    sheet = {
        "covers_sheet": dg.MetadataValue.path(
            f"s3://{memo.bucket}/{memo.entry_key(COVERS_NAMESPACE, key)}"
        )
    }
    if not inline:
        return sheet
    data = base64.b64encode(jpeg).decode()
    return {"covers": dg.MetadataValue.md(f"![covers](data:image/jpeg;base64,{data})"), **sheet}
