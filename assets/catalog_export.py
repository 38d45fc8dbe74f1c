import warnings
from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from assets.preset import BATCH
from assets.tables import batches_output, by_batch, content_version, preview
from assets.versions import CATALOG_EXPORT_VERSION
from photogroup.colours import colour_name
from resources.parquet_io_manager import Tables

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
    **BATCH,
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
    inputs = [by_batch(keys, t) for t in (product_groups, product_images, image_features)]
    tables = {key: _export(*(table[key] for table in inputs)) for key in keys}
    failing = {key: missing[:100] for key, t in tables.items() if (missing := _without_cover(t))}
    context.log.info(f"catalogue export: {sum(len(t) for t in tables.values())} product "
                     f"groups in {len(keys)} batch(es)")  # fmt: skip
    totals = {"run_product_groups": sum(len(t) for t in tables.values()),
              "run_batches_with_groups_without_cover": len(failing)}  # fmt: skip
    metadata = {key: _metadata(table) for key, table in tables.items()}
    yield batches_output(context, tables, metadata, _version, totals)
    yield _cover_check(keys, failing)


def _cover_check(keys: list[str], failing: dict[str, list[str]]) -> dg.AssetCheckResult:
    # One batch: its groups without a cover; a range: those of each batch.
    listed = (
        failing.get(keys[0], []) if len(keys) == 1 else dict(list(failing.items())[:CHECK_LISTED])
    )
    return dg.AssetCheckResult(
        check_name="every_group_has_a_cover_rendition",
        passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "batches_checked": len(keys),
            "batches_failing": len(failing),
            "groups_without_cover": dg.MetadataValue.json(listed),
        },
        description=f"Evaluated over the run's {len(keys)} batch(es).",
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
