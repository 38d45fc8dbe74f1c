"""Helpers the assets share: content data versions and Markdown previews."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import dagster as dg
import numpy as np
import pandas as pd

from resources.parquet_io_manager import Tables, range_data_version

#: ``status`` of a row a stage computed; other rows carry a failure and its ``reason``.
OK = "ok"
FAILED = "failed"


def ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a stage's table that hold a result (tables without ``status`` hold only
    those), for consumers that must skip failures."""
    if "status" not in table.columns:
        return table
    return table[table.status == OK].reset_index(drop=True)


def content_version(table: pd.DataFrame, columns: list[str]) -> dg.DataVersion:
    """A data version from the table's content, independent of row order and run."""
    rows = sorted(json.dumps([_cell(v) for v in row]) for row in table[columns].itertuples(False))
    digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return dg.DataVersion(digest[:24])


def _cell(value) -> str:
    if isinstance(value, np.ndarray):
        return hashlib.sha256(value.tobytes()).hexdigest()
    return str(value)


def preview(table: pd.DataFrame, columns: list[str], rows: int = 10) -> dg.MetadataValue:
    if table.empty:
        return dg.MetadataValue.md("_empty_")
    return dg.MetadataValue.md(table[columns].head(rows).to_markdown(index=False))


def coverage_check(
    check_name: str, table: pd.DataFrame, raw_images: pd.DataFrame, asset: str | None = None
) -> dg.AssetCheckResult:
    """Every accepted upload has exactly one row in ``table``, and no upload has two
    (``asset`` names the checked asset of a multi_asset)."""
    accepted = set(raw_images.key[raw_images.status == "accepted"])
    missing = sorted(accepted - set(table.key))
    duplicated = sorted(set(table.key[table.key.duplicated()]))
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset,
        passed=not missing and not duplicated,
        metadata={
            "accepted_images": len(accepted),
            "rows": len(table),
            "missing": dg.MetadataValue.json(missing[:100]),
            "duplicated": dg.MetadataValue.json(duplicated[:100]),
        },
    )


def by_batch(keys: Sequence[str], tables: Tables) -> dict[str, pd.DataFrame]:
    """An input as partition key -> table: a run over one batch gets a DataFrame, over
    several a dict (the IO manager's range form); range-capable assets take both alike."""
    return {keys[0]: tables} if isinstance(tables, pd.DataFrame) else dict(tables)


def batches_output(
    context: dg.AssetExecutionContext,
    tables: dict[str, pd.DataFrame],
    metadata: dict[str, dict],
    version: Callable[[pd.DataFrame], dg.DataVersion],
    totals: dict,
) -> dg.Output:
    """The output of a range-capable asset, one batch or many: each batch's metadata on its
    own materialisation, the run's ``totals`` on every one. A single batch is written as a
    DataFrame, a range as a dict (what the IO manager expects of each)."""
    versions = {key: version(table) for key, table in tables.items()}
    if len(tables) == 1:
        ((key, table),) = tables.items()
        return dg.Output(table, data_version=versions[key], metadata={**metadata[key], **totals})
    for key, table in tables.items():
        own = {"dagster/row_count": len(table), "content_version": versions[key].value}
        context.add_asset_metadata({**metadata[key], **own}, partition_key=key)
    return dg.Output(tables, data_version=range_data_version(versions), metadata=totals)
