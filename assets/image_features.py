"""image_features' stage and table (computed by the image_analysis multi_asset)."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from assets.engine import StageResult
from assets.tables import content_version, coverage_check, preview
from assets.versions import FEATURES_VERSION, WORK_VERSION
from photogroup.features import feature_entries
from photogroup.manifest import ACCEPTED
from photogroup.stages import Source, Stage

DESCRIPTION = """One row per accepted image: imagehash's average, perceptual, difference,
wavelet and colour hashes, a flip/rotation-invariant pHash set, dominant and mean colours,
sharpness, and ORB keypoints (image and mirror) for geometric verification."""
CHECK = "every_accepted_image_has_features"
FEATURE_COLUMNS = ["average_hash", "phash", "dhash", "whash", "colorhash", "phash_d4",
                   "dominant_colors", "dominant_fractions", "mean_color", "sharpness",
                   "work_width", "work_height", "keypoints"]  # fmt: skip


def accepted_sources(raw_images: pd.DataFrame) -> dict[str, str]:
    """SHA-256 -> one upload key holding those bytes, for every accepted image."""
    accepted = raw_images[raw_images.status == ACCEPTED]
    return dict(zip(accepted.sha256, accepted.key, strict=True))


def features_stage() -> Stage:
    # feature_entries uses every core here, or a worker's share of them.
    namespace = f"features/{FEATURES_VERSION}/work{WORK_VERSION}"
    return Stage("image_features", namespace, Source.WORKING_COPY, feature_entries)


def features_outputs(raw_images: pd.DataFrame, result: StageResult) -> Iterator:
    """The table (one row per accepted image, in manifest order), then its check."""
    table = raw_images.loc[raw_images.status == ACCEPTED, ["key", "file", "sha256"]]
    table = table.reset_index(drop=True)
    entries = [result.entries[sha] for sha in table.sha256]
    for column in FEATURE_COLUMNS:  # column by column: no per-row dicts next to the table
        table[column] = [entry[column] for entry in entries]
    # The table shares the entries' values; the dicts themselves would otherwise stay alive
    # in the suspended generator while the IO manager writes the table.
    del entries
    result.entries.clear()
    yield dg.Output(
        table,
        output_name="image_features",
        data_version=content_version(table, ["sha256", "phash", "colorhash"]),
        metadata={
            "images": len(table),
            **result.metadata(),
            "preview": preview(table, ["file", "phash", "dominant_colors", "sharpness"]),
        },
    )
    yield coverage_check(CHECK, table, raw_images, "image_features")
