"""The decorator arguments every per-batch asset shares: one place to change them."""

from typing import Any

import dagster as dg

from orchestration.partitions import upload_batch_partitions

GROUP = "image_pipeline"
KINDS = {"python", "s3"}
#: For ``@dg.asset(**BATCH, ...)`` and ``@dg.multi_asset(**BATCH_MULTI, ...)``.
BATCH: dict[str, Any] = {
    "partitions_def": upload_batch_partitions,
    "group_name": GROUP,
    "kinds": KINDS,
}
BATCH_MULTI: dict[str, Any] = {"partitions_def": upload_batch_partitions, "group_name": GROUP}


def batch_out(code_version: str, description: str) -> dg.AssetOut:
    """One table of a per-batch multi_asset; optional, so the table can be run alone."""
    return dg.AssetOut(
        code_version=code_version,
        description=description,
        kinds=KINDS,
        group_name=GROUP,
        is_required=False,
    )


def selected_outputs(context: dg.AssetExecutionContext, items: list) -> list:
    """A multi_asset's outputs and materialisations, with the check results of the checks
    selected in this run only (Dagster refuses results of checks it did not select)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    return [r for r in items if not isinstance(r, dg.AssetCheckResult) or r.check_name in selected]


def selected_checks(context: dg.AssetExecutionContext, results: list) -> list:
    """Check results of a multi_asset, less those of checks not selected in this run."""
    selected = {key.name for key in context.selected_asset_check_keys}
    return [r for r in results if r.check_name in selected]
