import dagster as dg

# Partitioned by upload batch: inferred from the selected assets.
image_pipeline_job = dg.define_asset_job(
    "image_pipeline_job",
    selection=dg.AssetSelection.groups("image_pipeline"),
    description="Manifest, features, embeddings and groups of one upload batch.",
)
