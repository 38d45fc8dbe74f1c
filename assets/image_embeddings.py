"""image_embeddings' stage and table (computed by the image_analysis multi_asset)."""

from collections.abc import Iterator
from functools import partial

import dagster as dg
import numpy as np
import pandas as pd

from assets.engine import StageResult
from assets.tables import FAILED, OK, content_version, coverage_check, ok_rows, preview
from assets.versions import EMBEDDINGS_VERSION, WORK_VERSION
from photogroup.embed import Embedder, LocalEmbedder, decode_vector, embedding_entries
from photogroup.manifest import ACCEPTED
from photogroup.stages import Source, Stage

DESCRIPTION = """One row per accepted image: an L2-normalised float32 embedding and the
model id, or status "failed" and the reason when the embedder could not embed it."""
CHECKS = ("unit_norms", "every_accepted_image_has_an_embedding")


def embeddings_stage(model: Embedder, batch_size: int) -> Stage:
    namespace = f"embeddings/{EMBEDDINGS_VERSION}/work{WORK_VERSION}/{model.model_id}-{model.dim}"
    compute = partial(embedding_entries, embedder=model, batch_size=batch_size)
    # Only the local embedder goes to worker processes: it is pure NumPy on small images
    # (GIL-bound, stateless, cheap to pickle). cnn/onnx would load their weights in every
    # worker and already run on threads; bedrock waits on the network under a token bucket
    # and bounded concurrency of this process, which workers would each multiply.
    in_workers = type(model) is LocalEmbedder
    return Stage("image_embeddings", namespace, Source.WORKING_COPY, compute, in_workers)


def embeddings_outputs(
    raw_images: pd.DataFrame, model: Embedder, batch_size: int, result: StageResult, log
) -> Iterator:
    """The table (every accepted image, ok or failed with a reason), then its checks."""
    calls = sum(-(-images // batch_size) for images in result.compute_calls)
    table = embedding_table(raw_images, model.model_id, result.entries, result.failures)
    ok, failed = ok_rows(table), table[table.status != OK]
    yield dg.Output(
        table,
        output_name="image_embeddings",
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
    norms = np.array([np.linalg.norm(v) for v in ok.embedding])
    bad = int((~np.isfinite(norms) | (np.abs(norms - 1) > 1e-3)).sum())
    yield dg.AssetCheckResult(
        check_name="unit_norms",
        asset_key="image_embeddings",
        passed=bad == 0,
        metadata={"vectors": len(norms), "not_unit_or_not_finite": bad},
    )
    yield coverage_check(CHECKS[1], ok, raw_images, "image_embeddings")
    if len(failed):
        log.warning(
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
