"""Helpers the assets share: content data versions and Markdown previews."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import numpy as np
import pandas as pd

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
    check_name: str, table: pd.DataFrame, raw_images: pd.DataFrame
) -> dg.AssetCheckResult:
    """Every accepted upload has exactly one row in ``table``, and no upload has two."""
    accepted = set(raw_images.key[raw_images.status == "accepted"])
    missing = sorted(accepted - set(table.key))
    duplicated = sorted(set(table.key[table.key.duplicated()]))
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not missing and not duplicated,
        metadata={
            "accepted_images": len(accepted),
            "rows": len(table),
            "missing": dg.MetadataValue.json(missing[:100]),
            "duplicated": dg.MetadataValue.json(duplicated[:100]),
        },
    )
