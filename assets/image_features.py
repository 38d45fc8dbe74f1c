import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import dagster as dg
import pandas as pd

from assets.batch_map import map_images
from assets.tables import content_version, coverage_check, preview
from assets.versions import FEATURES_VERSION, WORK_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup import compute_features
from photogroup.manifest import ACCEPTED
from resources.memo import MemoStore
from resources.uploads import UploadsBucket


def _features(images) -> list[dict]:
    # Pillow and NumPy release the GIL in resizes and DCTs: threads use every core
    # (1.7x on 2 cores), and a chunk of working copies bounds the memory.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return [asdict(features) for features in pool.map(compute_features, images)]


def accepted_sources(raw_images: pd.DataFrame) -> dict[str, str]:
    """SHA-256 -> one upload key holding those bytes, for every accepted image."""
    accepted = raw_images[raw_images.status == ACCEPTED]
    return dict(zip(accepted.sha256, accepted.key, strict=True))


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=FEATURES_VERSION,
    check_specs=[dg.AssetCheckSpec("every_accepted_image_has_features", asset="image_features")],
)
def image_features(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    memo: MemoStore,
    uploads: UploadsBucket,
):
    """One row per accepted image: imagehash's average, perceptual, difference, wavelet and
    colour hashes, a flip/rotation-invariant pHash set, dominant and mean colours, sharpness,
    and ORB keypoints (image and mirror) for geometric verification."""
    result = map_images(
        accepted_sources(raw_images),
        f"features/{FEATURES_VERSION}/work{WORK_VERSION}",
        _features,
        memo=memo,
        uploads=uploads,
        log=context.log,
        label="features",
        pack=context.partition_key,
    )
    accepted = raw_images[raw_images.status == ACCEPTED][["key", "file", "sha256"]]
    rows = [{**row, **result.entries[row["sha256"]]} for row in accepted.to_dict("records")]
    table = pd.DataFrame(rows, columns=[*accepted.columns, *FEATURE_COLUMNS])
    yield dg.Output(
        table,
        data_version=content_version(table, ["sha256", "phash", "colorhash"]),
        metadata={
            "images": len(table),
            **result.metadata(),
            "preview": preview(table, ["file", "phash", "dominant_colors", "sharpness"]),
        },
    )
    yield coverage_check("every_accepted_image_has_features", table, raw_images)


FEATURE_COLUMNS = ["average_hash", "phash", "dhash", "whash", "colorhash", "phash_d4",
                   "dominant_colors", "dominant_fractions", "mean_color", "sharpness",
                   "work_width", "work_height", "keypoints"]  # fmt: skip
