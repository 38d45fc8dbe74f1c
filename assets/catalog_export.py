from collections import Counter

import dagster as dg
import pandas as pd

from assets.tables import content_version, preview
from assets.versions import CATALOG_EXPORT_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup.colours import colour_name

COLUMNS = ["group_id", "product_id", "name", "size", "colour", "colours", "dominant_colors",
           "cover_file", "cover_renditions", "member_renditions"]  # fmt: skip


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=CATALOG_EXPORT_VERSION,
    check_specs=[dg.AssetCheckSpec("every_group_has_a_cover_rendition", asset="catalog")],
)
def catalog(
    context: dg.AssetExecutionContext,
    product_groups: pd.DataFrame,
    product_images: pd.DataFrame,
    image_features: pd.DataFrame,
) -> dg.Output:
    """The batch's catalogue export: one row per product group with its name, cover
    renditions, every member's renditions and the colours a shop filters on."""
    ok = product_images[product_images.status == "ok"]
    renditions = {
        key: rows[["size", "format", "width", "height", "rendition_key"]]
        .rename(columns={"rendition_key": "key"})
        .astype({"size": int, "width": int, "height": int})
        .to_dict("records")
        for key, rows in ok.groupby("key")
    }
    palette = dict(zip(image_features.key, image_features.dominant_colors, strict=True))
    rows = []
    for group in product_groups.itertuples():
        named = Counter(colour_name(palette[k][0]) for k in group.member_keys if len(palette[k]))
        rows.append({
            "group_id": group.group_id,
            "product_id": group.product_id,
            "name": group.name,
            "size": group.size,
            "colour": group.colour,
            "colours": [c for c, _ in named.most_common()],
            "dominant_colors": list(palette[group.cover_key]),
            "cover_file": group.cover_file,
            "cover_renditions": renditions.get(group.cover_key, []),
            "member_renditions": [
                {"file": f, "renditions": renditions.get(k, [])}
                for k, f in zip(group.member_keys, group.members, strict=True)
            ],
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    no_cover = sorted(table.group_id[[not r for r in table.cover_renditions]])
    context.log.info(f"catalogue export: {len(table)} product groups")
    yield dg.Output(
        table,
        data_version=content_version(table, ["group_id", "name", "cover_renditions"]),
        metadata={
            "product_groups": len(table),
            "products": int(table["product_id"].nunique()),
            "colours": dg.MetadataValue.json(dict(Counter(table.colour).most_common())),
            "preview": preview(table, ["name", "size", "colour", "cover_file"], 20),
        },
    )
    yield dg.AssetCheckResult(
        check_name="every_group_has_a_cover_rendition",
        passed=not no_cover,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"groups_without_cover": dg.MetadataValue.json(no_cover[:100])},
    )
