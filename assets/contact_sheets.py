"""Contact sheets of a batch's groups, stored content-addressed beside the memo entries."""

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd
from PIL import Image

from assets.engine import WORK_NAMESPACE
from assets.versions import CLUSTERS_VERSION
from photogroup.contact_sheet import contact_sheet
from photogroup.decode import open_work_image
from resources.memo import MemoStore

NAMESPACE = f"contact_sheets/{CLUSTERS_VERSION}"
#: Groups drawn, largest first: bounds the sheet (and the working copies read) per batch.
MAX_GROUPS = 30
PER_ROW = 8
PREVIEW_WIDTH = 900


def contact_sheet_metadata(table: pd.DataFrame, cluster_key: str, memo: MemoStore) -> dict:
    """Build (or reuse) the sheet for this grouping; metadata with its URI and a preview."""
    stored, _ = memo.get_many(NAMESPACE, [cluster_key])
    jpeg = stored.get(cluster_key)
    if jpeg is None:
        jpeg = _render(table, memo)
        memo.put_many(NAMESPACE, {cluster_key: jpeg})
    preview = Image.open(io.BytesIO(jpeg))
    preview.thumbnail((PREVIEW_WIDTH, PREVIEW_WIDTH * 4))
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode()
    return {
        "contact_sheet": dg.MetadataValue.path(
            f"s3://{memo.bucket}/{memo.entry_key(NAMESPACE, cluster_key)}"
        ),
        "contact_sheet_preview": dg.MetadataValue.md(f"![groups](data:image/jpeg;base64,{data})"),
    }


def _render(table: pd.DataFrame, memo: MemoStore) -> bytes:
    groups = (
        table.groupby("group_id", sort=False)
        .agg(size=("sha256", "size"), product=("product_id", "first"), shas=("sha256", list))
        .sort_values(["size", "product"], ascending=[False, True])
        .head(MAX_GROUPS)
    )
    # Only the copies drawn are read and decoded (a row shows PER_ROW), on every core.
    drawn = [list(dict.fromkeys(shas))[:PER_ROW] for shas in groups.shas]
    blobs, _ = memo.get_many(WORK_NAMESPACE, {sha for shas in drawn for sha in shas})
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = dict(zip(blobs, pool.map(open_work_image, blobs.values()), strict=True))
    rows = [
        (f"{group_id}\n{product}", [decoded[s] for s in shas if s in decoded])
        for group_id, product, shas in zip(groups.index, groups["product"], drawn, strict=True)
    ]
    sizes = [len(set(shas)) for shas in groups.shas]
    buffer = io.BytesIO()
    contact_sheet(rows, per_row=PER_ROW, sizes=sizes).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
