import dagster as dg
import numpy as np
import pandas as pd

from assets.preset import BATCH
from assets.tables import content_version, ok_rows, preview
from assets.versions import CATALOG_VERSION
from orchestration.partitions import BatchKey, upload_batch_partitions
from photogroup.catalog import entry_ids
from resources.catalog_store import CatalogStore, TenantCatalog

SEGMENT_COLUMNS = ["id", "batch", "key", "file", "sha256", "group_id", "product_id",
                   "embedding", "phash_d4"]  # fmt: skip


def build_segment(
    batch: str,
    clusters: pd.DataFrame,
    features: pd.DataFrame,
    embeddings: pd.DataFrame,
) -> pd.DataFrame:
    """One catalogue row per distinct accepted image of the batch that has an embedding."""
    table = (
        clusters[["key", "file", "sha256", "group_id", "product_id"]]
        .merge(features[["sha256", "phash_d4"]].drop_duplicates("sha256"), on="sha256")
        .merge(embeddings[["sha256", "embedding"]].drop_duplicates("sha256"), on="sha256")
        .sort_values("file")
        .drop_duplicates("sha256")  # the same bytes twice in one batch: one entry
        .reset_index(drop=True)
    )
    table["batch"] = batch
    table["id"] = entry_ids(batch, list(table.sha256))
    table["phash_d4"] = [list(row) for row in table.phash_d4]
    return table[SEGMENT_COLUMNS]


def update_tenant(
    catalog: TenantCatalog,
    batch: str,
    segment: pd.DataFrame,
    model_id: str,
    registered: set[str],
    log,
) -> dict:
    """Add ``batch`` to the catalogue (replacing an earlier version of it), drop batches
    whose partitions were deleted; returns what changed, for metadata."""
    reset = bool(catalog.model_id) and bool(model_id) and catalog.model_id != model_id
    if reset:
        log.warning(
            f"embedding model changed ({catalog.model_id} -> {model_id}): the catalogue "
            "restarts from this batch; backfill earlier batches to add them again"
        )
        catalog.__init__()
    removed = []
    for other in sorted(set(catalog.batches) - registered - {batch}):
        catalog.remove_batch(other)
        removed.append(other)
    if removed:
        log.info(f"catalogue: removed {len(removed)} deleted batches: {', '.join(removed[:10])}")
    catalog.model_id = model_id or catalog.model_id
    catalog.add_batch(batch, segment)
    return {"reset": reset, "removed_batches": removed}


@dg.asset(
    **BATCH,
    code_version=CATALOG_VERSION,
    # One writer per catalogue at a time: the tenant's index is read, changed and written.
    pool="catalog",
)
def catalog_index(
    context: dg.AssetExecutionContext,
    image_clusters: pd.DataFrame,
    image_features: pd.DataFrame,
    image_embeddings: pd.DataFrame,
    catalog: CatalogStore,
):
    """This batch's rows of its tenant's catalogue (pHashes, embedding, group, product), added
    to the tenant's index on the pipeline bucket. Only this batch's rows are added; earlier
    batches are neither recomputed nor re-fetched. Batches whose partition was deleted are
    removed from the index."""
    key = BatchKey.parse(context.partition_key)
    image_embeddings = ok_rows(image_embeddings)  # failed embeddings are not indexed
    segment = build_segment(key.batch, image_clusters, image_features, image_embeddings)
    model_id = str(image_embeddings.model_id.iloc[0]) if len(image_embeddings) else ""
    registered = {
        BatchKey.parse(p).batch
        for p in context.instance.get_dynamic_partitions(upload_batch_partitions.name)
        if p.startswith(f"{key.tenant}/")
    }
    tenant = catalog.load(key.tenant)
    change = update_tenant(tenant, key.batch, segment, model_id, registered, context.log)
    catalog.save(key.tenant, tenant)
    context.log.info(
        f"catalogue of {key.tenant}: +{len(segment)} rows from {key.batch}, "
        f"{len(tenant.rows)} rows in {len(tenant.batches)} batches"
    )
    index = f"s3://{catalog.bucket}/{catalog.prefix}/{key.tenant}/"
    version = content_version(segment, ["id", "group_id", "product_id", "embedding"])
    meta = _metadata(segment, tenant, model_id, change, index)
    return dg.Output(segment, data_version=version, metadata=meta)


def _metadata(segment: pd.DataFrame, tenant: TenantCatalog, model_id, change, index) -> dict:
    return {
        "rows_added": len(segment),
        "catalogue_rows": len(tenant.rows),
        "catalogue_batches": len(tenant.batches),
        "model_id": model_id,
        "model_changed_reset": change["reset"],
        "removed_batches": dg.MetadataValue.json(change["removed_batches"]),
        "index": dg.MetadataValue.path(index),
        "preview": preview(segment, ["file", "sha256", "group_id", "product_id"]),
        "embedding_dim": int(np.stack(segment.embedding).shape[1]) if len(segment) else 0,
    }
