import dagster as dg

from orchestration.partitions import upload_batch_partitions

image_pipeline_job = dg.define_asset_job(
    "image_pipeline_job",
    selection=dg.AssetSelection.groups("image_pipeline"),
    partitions_def=upload_batch_partitions,
    description="Manifest, features, embeddings and groups of one upload batch.",
)
