import warnings
from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from assets.tables import content_version, preview
from assets.versions import CATALOG_EXPORT_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup.colours import colour_name
from resources.parquet_io_manager import Tables, range_data_version

COLUMNS = ["group_id", "product_id", "name", "size", "colour", "colours", "dominant_colors",
           "cover_file", "cover_renditions", "member_renditions"]  # fmt: skip


# Single-run backfills are deliberate, so Dagster's warnings about them would only be noise on
# every load: backfill_policy is beta, and image_pipeline_job mixing policies makes its job
# backfills one batch per run (as before); asset backfills use each asset's own policy.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
warnings.filterwarnings("ignore", category=UserWarning, message=".*varying BackfillPolicies.*")
#: Batches listed by name in a range's check metadata.
CHECK_LISTED = 100
#: Upstream tables: a DataFrame for one batch, a dict of them for a run over several.
TABLE_INPUTS = ("product_groups", "product_images", "image_features")


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=CATALOG_EXPORT_VERSION,
    check_specs=[dg.AssetCheckSpec("every_group_has_a_cover_rendition", asset="catalog")],
    # A change of the export format re-exports every batch in one run; inputs are then dicts.
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={name: dg.AssetIn(dagster_type=dg.Any) for name in TABLE_INPUTS},
)
def catalog(
    context: dg.AssetExecutionContext,
    product_groups: Tables,
    product_images: Tables,
    image_features: Tables,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The batch's catalogue export: one row per product group with its name, cover
    renditions, every member's renditions and the colours a shop filters on.

    A run over several batches (single-run backfill) gets dicts partition key -> table and
    returns one; each batch's materialisation carries that batch's metadata, and the check
    covers every batch of the run."""
    keys = context.partition_keys
    if len(keys) == 1:
        table = _export(product_groups, product_images, image_features)
        no_cover = _without_cover(table)
        context.log.info(f"catalogue export: {len(table)} product groups")
        yield dg.Output(table, data_version=_version(table), metadata=_metadata(table))
        yield dg.AssetCheckResult(
            check_name="every_group_has_a_cover_rendition",
            passed=not no_cover,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"groups_without_cover": dg.MetadataValue.json(no_cover[:100])},
        )
        return

    tables, versions, failing = {}, {}, {}
    for key in keys:
        table = _export(product_groups[key], product_images[key], image_features[key])
        tables[key], versions[key] = table, _version(table)
        context.add_asset_metadata(
            {**_metadata(table), "dagster/row_count": len(table),
             "content_version": versions[key].value},
            partition_key=key,
        )  # fmt: skip
        if missing := _without_cover(table):
            failing[key] = missing[:100]
    context.log.info(
        f"catalogue export: {sum(len(t) for t in tables.values())} product groups "
        f"in {len(keys)} batches"
    )
    yield dg.Output(
        tables,
        data_version=range_data_version(versions),
        # On every batch's materialisation, next to its own figures: the run's totals.
        metadata={
            "run_product_groups": sum(len(t) for t in tables.values()),
            "run_batches_with_groups_without_cover": len(failing),
        },
    )
    yield dg.AssetCheckResult(
        check_name="every_group_has_a_cover_rendition",
        passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "batches_checked": len(keys),
            "batches_failing": len(failing),
            "groups_without_cover": dg.MetadataValue.json(
                dict(list(failing.items())[:CHECK_LISTED])
            ),
        },
        description=f"Evaluated over the run's {len(keys)} batches.",
    )


def _export(
    product_groups: pd.DataFrame, product_images: pd.DataFrame, image_features: pd.DataFrame
) -> pd.DataFrame:
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
    return pd.DataFrame(rows, columns=COLUMNS)


def _without_cover(table: pd.DataFrame) -> list[str]:
    return sorted(table.group_id[[not r for r in table.cover_renditions]])


def _version(table: pd.DataFrame) -> dg.DataVersion:
    return content_version(table, ["group_id", "name", "cover_renditions"])


def _metadata(table: pd.DataFrame) -> dict:
    return {
        "product_groups": len(table),
        "products": int(table["product_id"].nunique()),
        "colours": dg.MetadataValue.json(dict(Counter(table.colour).most_common())),
        "preview": preview(table, ["name", "size", "colour", "cover_file"], 20),
    }
