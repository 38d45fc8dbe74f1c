import base64
import hashlib
import io
import json

import dagster as dg
import pandas as pd

from assets.batch_map import WORK_NAMESPACE
from assets.tables import content_version, preview
from assets.versions import PRODUCT_GROUPS_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup.colours import colour_name
from photogroup.contact_sheet import tile_sheet
from photogroup.decode import open_work_image
from photogroup.edits import APPLIED, HOLDS, NOT_APPLICABLE, parse_log
from photogroup.product_groups import edited_groups, machine_groups, product_group_table
from resources.edit_log import EditLog
from resources.memo import MemoStore

#: People's corrections, written by `python -m orchestration groups edit`, which reports a
#: materialisation of this external asset: product_groups then shows as changed upstream.
grouping_edits = dg.AssetSpec(
    "grouping_edits",
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"s3"},
    description="Edit log of the batch's groups (rename, split, merge, move), JSON lines at "
    "s3://<pipeline-bucket>/edits/<tenant>/<batch>.jsonl.",
)
#: Covers drawn in the preview: bounds the working copies read per batch.
PREVIEW_COVERS = 24
COVERS_NAMESPACE = f"covers/{PRODUCT_GROUPS_VERSION}"


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=PRODUCT_GROUPS_VERSION,
    deps=[grouping_edits],
    check_specs=[dg.AssetCheckSpec("every_edit_applies", asset="product_groups")],
)
def product_groups(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    image_features: pd.DataFrame,
    image_clusters: pd.DataFrame,
    edit_log: EditLog,
    memo: MemoStore,
):
    """One row per group: image_clusters with the batch's edit log applied, each group's
    name, cover image (sharpest, then largest) and members. Reads tables only: no image is
    fetched, featurised or embedded again."""
    text, _ = edit_log.read(context.partition_key)
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
    for item in stale:
        context.log.warning(f"edit {item['line']} ({item['op']}) no longer applies: "
                            f"{item['reason']}")  # fmt: skip
    context.log.info(
        f"{len(edits)} edits: {counts[APPLIED]} applied, {counts[HOLDS]} already held, "
        f"{counts[NOT_APPLICABLE]} no longer apply; {len(table)} groups"
    )
    yield dg.Output(
        table,
        data_version=content_version(table, ["group_id", "product_id", "name", "member_shas"]),
        metadata={
            "groups": len(table),
            "products": int(table.product_id.nunique()),
            "named_groups": int(table.named.sum()),
            "edited_groups": int(table.edited.sum()),
            "edits": len(edits),
            "edits_applied": counts[APPLIED],
            "edits_already_held": counts[HOLDS],
            "edits_not_applicable": counts[NOT_APPLICABLE],
            "not_applicable": dg.MetadataValue.json(stale),
            "edit_log": dg.MetadataValue.path(
                f"s3://{edit_log.bucket}/{edit_log.key(context.partition_key)}"
            ),
            "preview": preview(
                table.sort_values("size", ascending=False),
                ["name", "group_id", "product_id", "size", "colour", "cover_file"],
                20,
            ),
            **_cover_preview(table, memo),
        },
    )
    yield dg.AssetCheckResult(
        check_name="every_edit_applies",
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"not_applicable": dg.MetadataValue.json(stale)},
        description="Edits whose images moved apart after clustering re-ran need a person.",
    )


def _who(edit) -> dict:
    return {"who": edit.who, "when": edit.when, "why": edit.why} if hasattr(edit, "who") else {}


def _cover_preview(table: pd.DataFrame, memo: MemoStore) -> dict:
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
    data = base64.b64encode(jpeg).decode()
    return {
        "covers": dg.MetadataValue.md(f"![covers](data:image/jpeg;base64,{data})"),
        "covers_sheet": dg.MetadataValue.path(
            f"s3://{memo.bucket}/{memo.entry_key(COVERS_NAMESPACE, key)}"
        ),
    }
