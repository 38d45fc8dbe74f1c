"""Amazon Bedrock Titan Multimodal Embeddings (``amazon.titan-embed-image-v1``) as an Embedder.

One ``InvokeModel`` request per image, so a batch gives exactly the vectors its images give
alone. Requests go through a client-side token bucket (run it below the account's
"On-demand InvokeModel requests per minute" quota) and at most ``max_concurrency`` are in
flight; retries, error mapping and counters are the shared Bedrock client's
(resources/bedrock_client.py). A failed image never fails the batch:
``embed_with_failures`` returns a NaN row and a reason for it.
"""

import base64
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from photogroup.embed import l2_normalise
from photogroup.providers import EmbedOutcome
from resources.bedrock_client import BedrockClient, model_slug
from resources.provider_client import Failed

log = logging.getLogger(__name__)

TITAN_IMAGE_MODEL = "amazon.titan-embed-image-v1"
OUTPUT_LENGTHS = (256, 384, 1024)
#: Titan's documented input limits: 2048 x 2048 pixels, 25 MB.
MAX_SIDE = 2048


class EmbeddingFailed(RuntimeError):
    """``embed()`` was asked for vectors but the provider refused some images."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = dict(failures)
        shown = "; ".join(f"image {i}: {r}" for i, r in sorted(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"Bedrock could not embed {len(failures)} image(s): {shown}{more}")


def check_output_length(output_length: int) -> int:
    if isinstance(output_length, bool) or output_length not in OUTPUT_LENGTHS:
        raise ValueError(
            f"output_length must be one of 256, 384 or 1024 (Titan Multimodal Embeddings G1), "
            f"got {output_length!r}"
        )
    return int(output_length)


def encode_image(img: Image.Image) -> str:
    """Base64 PNG (lossless, so the provider sees our pixels), within Titan's size limit."""
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img = img.copy()
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


class BedrockEmbedder(BedrockClient):
    """Titan Multimodal Embeddings G1: one FallibleEmbedder (photogroup.providers)."""

    def __init__(
        self,
        client: Any,
        output_length: int = 1024,
        requests_per_minute: float = 100.0,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        *,
        model: str = TITAN_IMAGE_MODEL,
        **kwargs: Any,
    ) -> None:
        """``kwargs`` go to BedrockClient (burst, headroom, limiter, backoff, sleep)."""
        self.output_length = check_output_length(output_length)
        super().__init__(
            client, model, requests_per_minute, max_concurrency, max_attempts, **kwargs
        )
        self.dim = self.output_length
        self.model_id = f"bedrock-{model_slug(model)}-{self.output_length}"

    def __repr__(self) -> str:
        return (
            f"BedrockEmbedder(model={self.model!r}, output_length={self.output_length}, "
            f"rate_per_minute={self.limiter.rate_per_minute:g}, "
            f"max_concurrency={self.max_concurrency})"
        )

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``len(images) x dim`` unit float32 rows; raises EmbeddingFailed if any image failed."""
        outcome = self.embed_with_failures(images)
        if outcome.failures:
            raise EmbeddingFailed(outcome.failures)
        return outcome.vectors

    def embed_with_failures(self, images: Sequence[Image.Image]) -> EmbedOutcome:
        """Vectors for every image that could be embedded; NaN rows plus reasons for the rest."""
        vectors = np.full((len(images), self.dim), np.nan, dtype=np.float32)
        failures: dict[int, str] = {}
        results = self.each(self._embed_one, images, self.max_concurrency, "bedrock")
        for index, result in enumerate(results):
            if isinstance(result, str):
                failures[index] = result
                log.warning("Bedrock embedding failed for image %d: %s", index, result)
            else:
                vectors[index] = result
        return EmbedOutcome(vectors, failures)

    def _embed_one(self, img: Image.Image) -> np.ndarray | str:
        """The unit vector, or why there is none."""
        try:
            config = {"outputEmbeddingLength": self.output_length}
            body = json.dumps({"inputImage": encode_image(img), "embeddingConfig": config})
        except (OSError, ValueError) as exc:
            return self.clip(f"encode_error: {type(exc).__name__}: {exc}")
        try:
            return self.call(lambda: self._vector(self.invoke(body)[0]))
        except Failed as failed:
            return failed.reason

    def _vector(self, payload: Any) -> np.ndarray:
        embedding = payload.get("embedding") if isinstance(payload, dict) else None
        if not isinstance(embedding, list):
            message = payload.get("message") if isinstance(payload, dict) else None
            raise Failed(self.clip(f"bad_response: no embedding in the response ({message})"))
        row = np.asarray(embedding, dtype=np.float32)
        if row.shape != (self.dim,):
            raise Failed(f"bad_response: embedding of length {row.size}, expected {self.dim}")
        if not np.isfinite(row).all() or not np.any(row):
            raise Failed("bad_response: embedding is zero or not finite")
        return l2_normalise(row[None, :])[0]
