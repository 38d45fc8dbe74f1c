"""image_features and image_embeddings: one step, one read and one decode per image."""

from itertools import chain

import dagster as dg
import pandas as pd
from pydantic import Field

from assets import image_embeddings as emb
from assets import image_features as feat
from assets.engine import ChunkConfig, run_stages
from assets.preset import BATCH_MULTI, batch_out
from assets.versions import EMBEDDINGS_VERSION, FEATURES_VERSION
from resources.embedder import EmbedderResource
from resources.memo import MemoStore
from resources.uploads import UploadsBucket


class AnalysisConfig(ChunkConfig):
    """Chunks of working copies, shared by features and embeddings (worker processes are
    used with the local embedder only)."""

    chunk_size: int | None = Field(
        default=None, ge=1, description="Images per chunk; None: the embedder's batch_size."
    )


@dg.multi_asset(
    **BATCH_MULTI,
    name="image_analysis",
    outs={
        "image_features": batch_out(FEATURES_VERSION, feat.DESCRIPTION),
        "image_embeddings": batch_out(EMBEDDINGS_VERSION, emb.DESCRIPTION),
    },
    can_subset=True,
    check_specs=[
        dg.AssetCheckSpec(feat.CHECK, asset="image_features"),
        *(dg.AssetCheckSpec(name, asset="image_embeddings") for name in emb.CHECKS),
    ],
)
def image_analysis(
    context: dg.AssetExecutionContext,
    config: AnalysisConfig,
    raw_images: pd.DataFrame,
    embedder: EmbedderResource,
    memo: MemoStore,
    uploads: UploadsBucket,
):
    """Features and embeddings of every accepted image from one read and one decode of its
    working copy; either table can be materialised alone."""
    model = embedder.get_embedder()
    stages = [feat.features_stage(), emb.embeddings_stage(model, embedder.batch_size)]
    stages = [s for s in stages if dg.AssetKey(s.name) in context.selected_asset_keys]
    results = run_stages(stages, feat.accepted_sources(raw_images), memo=memo,
                         uploads=uploads, log=context.log, pack=context.partition_key,
                         chunk=config.chunk_size or embedder.batch_size,
                         processes=config.processes)  # fmt: skip
    outputs = []  # generators: each table is built when the previous one is written
    if "image_features" in results:
        outputs.append(feat.features_outputs(raw_images, results.pop("image_features")))
    if "image_embeddings" in results:
        result = results.pop("image_embeddings")
        outputs.append(emb.embeddings_outputs(raw_images, model, embedder.batch_size, result,
                                              context.log))  # fmt: skip
    checks = {key.name for key in context.selected_asset_check_keys}
    for item in chain.from_iterable(outputs):
        if not isinstance(item, dg.AssetCheckResult) or item.check_name in checks:
            yield item
