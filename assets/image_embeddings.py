from functools import partial

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets.batch_map import ChunkConfig, map_images
from assets.image_features import accepted_sources
from assets.tables import FAILED, OK, content_version, coverage_check, ok_rows, preview
from assets.versions import EMBEDDINGS_VERSION, WORK_VERSION
from orchestration.partitions import upload_batch_partitions
from photogroup.embed import LocalEmbedder, decode_vector, embedding_entries
from photogroup.manifest import ACCEPTED
from resources.embedder import EmbedderResource
from resources.memo import MemoStore
from resources.uploads import UploadsBucket


class EmbeddingsConfig(ChunkConfig):
    """Chunks of images to embed; worker processes are used by the local embedder only."""

    chunk_size: int | None = Field(
        default=None, ge=1, description="Images per chunk; None: the embedder's batch_size."
    )


@dg.asset(
    partitions_def=upload_batch_partitions,
    group_name="image_pipeline",
    kinds={"python", "s3"},
    code_version=EMBEDDINGS_VERSION,
    check_specs=[
        dg.AssetCheckSpec("unit_norms", asset="image_embeddings"),
        dg.AssetCheckSpec("every_accepted_image_has_an_embedding", asset="image_embeddings"),
    ],
)
def image_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    raw_images: pd.DataFrame,
    embedder: EmbedderResource,
    memo: MemoStore,
    uploads: UploadsBucket,
):
    """One row per accepted image: an L2-normalised float32 embedding and the model id, or
    status "failed" and the reason when the embedder could not embed it."""
    model = embedder.get_embedder()
    # Only the local embedder goes to worker processes: it is pure NumPy on small images
    # (GIL-bound, stateless, cheap to pickle). cnn/onnx would load their weights in every
    # worker and already run on `threads`; bedrock waits on the network under a token bucket
    # and bounded concurrency of this process, which workers would each multiply.
    processes = config.processes if type(model) is LocalEmbedder else 1
    if processes != config.processes:
        context.log.info(f"embeddings: {model.model_id} runs in this process, not in "
                         f"{config.processes} worker processes")  # fmt: skip
    result = map_images(
        accepted_sources(raw_images),
        f"embeddings/{EMBEDDINGS_VERSION}/work{WORK_VERSION}/{model.model_id}-{model.dim}",
        partial(embedding_entries, embedder=model, batch_size=embedder.batch_size),
        memo=memo,
        uploads=uploads,
        log=context.log,
        label="embeddings",
        pack=context.partition_key,
        chunk=config.chunk_size or embedder.batch_size,
        processes=processes,
    )
    calls = sum(-(-images // embedder.batch_size) for images in result.compute_calls)
    table = embedding_table(raw_images, model.model_id, result.entries, result.failures)
    ok, failed = ok_rows(table), table[table.status != OK]
    norms = np.array([np.linalg.norm(v) for v in ok.embedding])
    yield dg.Output(
        table,
        data_version=content_version(table, ["sha256", "model_id", "embedding", "status"]),
        metadata={
            "images": len(ok),
            "model_id": model.model_id,
            "dimensions": model.dim,
            "embedder_calls": calls,
            **result.metadata(),
            **(model.stats() if hasattr(model, "stats") else {}),
            "failures": preview(failed, ["file", "sha256", "reason"]),
            "preview": preview(ok, ["file", "sha256", "model_id"]),
        },
    )
    bad = int((~np.isfinite(norms) | (np.abs(norms - 1) > 1e-3)).sum())
    yield dg.AssetCheckResult(
        check_name="unit_norms",
        passed=bad == 0,
        metadata={"vectors": len(norms), "not_unit_or_not_finite": bad},
    )
    yield coverage_check("every_accepted_image_has_an_embedding", ok, raw_images)
    if len(failed):
        context.log.warning(
            f"{len(failed)} images could not be embedded and are left out of grouping; "
            "they are retried on the next run: " + ", ".join(failed.file.head(10))
        )


def embedding_table(
    raw_images: pd.DataFrame, model_id: str, entries: dict[str, dict], failures: dict[str, str]
) -> pd.DataFrame:
    """One row per accepted image: its vector and status ok, or no vector, status failed and
    the provider's reason (failures are not memoised: retried on the next run)."""
    table = raw_images.loc[raw_images.status == ACCEPTED, ["key", "file", "sha256"]]
    table = table.reset_index(drop=True)
    table["model_id"] = model_id
    table["embedding"] = [
        None if sha in failures else decode_vector(entries[sha]) for sha in table.sha256
    ]
    table["status"] = [FAILED if sha in failures else OK for sha in table.sha256]
    table["reason"] = [failures.get(sha, "") for sha in table.sha256]
    return table
