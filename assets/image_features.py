import dagster as dg
import pandas as pd

from assets.batch_map import ChunkConfig, map_images
from assets.tables import content_version, coverage_check, preview
from assets.versions import FEATURES_VERSION, WORK_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup.features import feature_entries
from photogroup.manifest import ACCEPTED
from resources.memo import MemoStore
from resources.uploads import UploadsBucket


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
    config: ChunkConfig,
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
        feature_entries,  # on every core here, or on a worker's share of them
        memo=memo,
        uploads=uploads,
        log=context.log,
        label="features",
        pack=context.partition_key,
        chunk=config.chunk_size,
        processes=config.processes,
    )
    table = raw_images.loc[raw_images.status == ACCEPTED, ["key", "file", "sha256"]]
    table = table.reset_index(drop=True)
    entries = [result.entries[sha] for sha in table.sha256]
    for column in FEATURE_COLUMNS:  # column by column: no per-row dicts next to the table
        table[column] = [entry[column] for entry in entries]
    # The table shares the entries' values; the dicts themselves would otherwise stay alive
    # in this suspended generator while the IO manager writes the table.
    del entries
    result.entries.clear()
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
