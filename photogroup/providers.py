"""The provider contract: what every embedder and cut-out provider offers, local or remote.

Pure (no I/O): the two protocols the resources choose between, the per-image results, and
the helpers every provider reports through (latency percentiles, clipped reasons).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

#: Longest reason kept: reasons become log lines and asset metadata.
MAX_REASON = 300

#: (pattern, replacement) pairs applied to a reason, e.g. credential-shaped text.
Redactions = Sequence[tuple[re.Pattern[str], str]]


@dataclass
class EmbedOutcome:
    """A batch's vectors plus the images a remote provider could not embed.

    Rows of failed images are NaN; ``failures`` maps their row index to a reason, so the
    caller records them instead of dropping them, and does not memoise them.
    """

    vectors: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)


@dataclass
class CutoutOutcome:
    """One image's result: a mask, or why there is none."""

    mask: Image.Image | None  # mode "L", the input's size; 255 foreground, 0 background
    error: str | None = None
    seconds: float = 0.0  # the image's own time (remote: request accepted to done)
    prediction_id: str | None = None  # the provider's id of the request, if it has one

    @property
    def ok(self) -> bool:
        return self.mask is not None


@runtime_checkable
class Embedder(Protocol):
    """What every embedder implements; ``model_id`` names the model and its version."""

    model_id: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return ``len(images) x dim`` float32, each row L2-normalised."""
        ...


@runtime_checkable
class FallibleEmbedder(Embedder, Protocol):
    """A remote embedder: some images may fail without failing the batch."""

    def embed_with_failures(self, images: Sequence[Image.Image]) -> EmbedOutcome:
        """Vectors for the images that could be embedded; NaN rows plus reasons for the rest."""
        ...

    def stats(self) -> dict[str, int | float]:
        """Counters since construction, as asset metadata."""
        ...


@runtime_checkable
class CutoutProvider(Protocol):
    """What every background-removal provider implements (local GrabCut, ONNX, remote)."""

    model_id: str  # part of every memo key: masks follow the model, not the provider name

    def cut_out(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        """One outcome per image, in order; per-image failures are outcomes, never raised."""
        ...

    def stats(self) -> dict[str, int | float]:
        """Counters since construction, as asset metadata."""
        ...


def latency_percentiles(seconds: Iterable[float], empty: float = math.nan) -> dict[str, float]:
    """``latency_p50_seconds`` and ``latency_p95_seconds`` of successful images, rounded to ms;
    ``empty`` for both when there were none."""
    values = list(seconds)
    p50, p95 = np.percentile(values, [50, 95]) if values else (empty, empty)
    return {
        "latency_p50_seconds": round(float(p50), 3),
        "latency_p95_seconds": round(float(p95), 3),
    }


def clip_reason(text: object, redactions: Redactions = (), secrets: Iterable[str] = ()) -> str:
    """One line of at most MAX_REASON characters, each secret and each redaction replaced."""
    text = " ".join(str(text).split())
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern, replacement in redactions:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
