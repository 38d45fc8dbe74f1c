import dagster as dg
import numpy as np
import pandas as pd

from assets.preset import BATCH
from assets.tables import content_version, preview
from assets.versions import CATALOG_VERSION
from orchestration.partitions import BatchKey
from photogroup.catalog import (
    EXACT,
    NEAR_DUPLICATE,
    SIMILAR_PRODUCT,
    find_matches,
)
from photogroup.cluster import parse_hashes
from resources.catalog_store import CatalogStore, TenantCatalog

COLUMNS = ["key", "file", "sha256", "group_id", "rank", "kind", "cosine", "hash_distance",
           "match_batch", "match_file", "match_sha256", "match_group_id",
           "match_product_id"]  # fmt: skip
K = 10


def match_segment(segment: pd.DataFrame, catalog: TenantCatalog, batch: str) -> pd.DataFrame:
    """Each image's nearest entries among the tenant's earlier batches (lower sequence)."""
    if not len(segment) or catalog.vectors is None or batch not in catalog.batches:
        return pd.DataFrame(columns=COLUMNS)
    seq = catalog.batches[batch]["seq"]
    rows = catalog.rows
    # This batch and later ones are skipped inside the searches: only earlier images rank.
    excluded = rows.id[rows.seq >= seq].to_numpy(dtype=np.int64)
    earlier = rows[rows.seq < seq].set_index("id")
    queries = np.stack(segment.embedding.to_numpy()).astype(np.float32)
    d4 = parse_hashes(list(segment.phash_d4))
    matches = find_matches(
        queries, d4, list(segment.sha256), catalog.vectors, catalog.hashes,
        earlier.sha256.to_dict(), k=K, exclude=excluded,
    )  # fmt: skip
    out, rank = [], {}
    for m in matches:
        q = segment.iloc[m.query]
        hit = earlier.loc[m.entry]
        rank[m.query] = rank.get(m.query, 0) + 1
        out.append([q.key, q.file, q.sha256, q.group_id, rank[m.query], m.kind,
                    None if np.isnan(m.cosine) else round(m.cosine, 4), m.hash_distance,
                    hit.batch, hit.file, hit.sha256, hit.group_id, hit.product_id])  # fmt: skip
    return pd.DataFrame(out, columns=COLUMNS)


@dg.asset(
    **BATCH,
    code_version=CATALOG_VERSION,
    pool="catalog",
)
def catalog_matches(
    context: dg.AssetExecutionContext, catalog_index: pd.DataFrame, catalog: CatalogStore
):
    """For each image of the batch, the nearest images of the tenant's earlier batches:
    kind (exact bytes, near-duplicate, similar product), distances, and the earlier group
    and product they belong to, so a re-uploaded product can join its existing product
    group. Only the tenant's own catalogue is searched."""
    key = BatchKey.parse(context.partition_key)
    tenant = catalog.load(key.tenant)
    table = match_segment(catalog_index, tenant, key.batch)
    best = table[table["rank"] == 1]
    kinds = best.kind.value_counts().to_dict()
    seq = tenant.batches.get(key.batch, {}).get("seq", 0)
    earlier = sum(1 for b in tenant.batches.values() if b["seq"] < seq)
    columns = ["file", "kind", "match_batch", "match_file", "match_group_id"]
    context.log.info(
        f"{best.sha256.nunique()} of {len(catalog_index)} images match earlier batches of "
        f"{key.tenant}: {kinds}"
    )
    return dg.Output(
        table,
        data_version=content_version(table, ["sha256", "match_sha256", "kind"]),
        metadata={
            "images": len(catalog_index),
            "images_matched": int(best.sha256.nunique()),
            "exact_bytes": int(kinds.get(EXACT, 0)),
            "near_duplicates": int(kinds.get(NEAR_DUPLICATE, 0)),
            "similar_products": int(kinds.get(SIMILAR_PRODUCT, 0)),
            "earlier_batches": earlier,
            "preview": preview(best, columns, 20),
        },
    )
