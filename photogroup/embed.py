"""Image embedders: a batch of RGB images in, an ``n x d`` float32 array of unit rows out."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import scipy.fftpack
from PIL import Image

from photogroup.chunks import Failed
from photogroup.features import trim_uniform_border

# The contract lives in photogroup.providers; callers may import it from here too.
from photogroup.providers import Embedder, EmbedOutcome, FallibleEmbedder


def embed_with_failures(embedder: Embedder, images: Sequence[Image.Image]) -> EmbedOutcome:
    """A FallibleEmbedder reports the images it could not embed; others cannot fail one."""
    if isinstance(embedder, FallibleEmbedder):
        return embedder.embed_with_failures(images)
    return EmbedOutcome(embedder.embed(images))


def embedding_entries(
    images: Sequence[Image.Image], *, embedder: Embedder, batch_size: int
) -> list[dict | Failed]:
    """One memo entry (the vector, base64 of little-endian float32) or Failed per image, in
    embed calls of at most ``batch_size`` images. Module-level so that worker processes can
    run it with a picklable embedder."""
    entries: list[dict | Failed] = []
    for start in range(0, len(images), batch_size):
        outcome = embed_with_failures(embedder, images[start : start + batch_size])
        for row, vector in enumerate(outcome.vectors):
            reason = outcome.failures.get(row)
            entries.append(Failed(reason) if reason else {"vector": encode_vector(vector)})
    return entries


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def decode_vector(entry: dict) -> np.ndarray:
    """The vector of an entry made by :func:`embedding_entries`."""
    return np.frombuffer(base64.b64decode(entry["vector"]), dtype="<f4")


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Scale each row to unit length; all-zero rows stay zero (never NaN)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


class LocalEmbedder:
    """Offline, deterministic descriptor; no weights, no downloads.

    Three blocks on the border-trimmed image resized to 64 x 64, each centred, L2-normalised
    and weighted (cosine similarity is then the weighted mean of the blocks' correlations):

    * colour: joint HSV histogram, 8 hue x 4 saturation x 4 value bins (128), square-rooted
      (Hellinger) so that large flat areas do not dominate;
    * shape: histograms of gradient orientation (Dalal & Triggs 2005), 8 unsigned bins in a
      4 x 4 grid of cells (128), averaged over the 8 flips/quarter turns so that mirrored and
      rotated copies get the same vector;
    * layout: magnitudes of the 8 x 8 lowest DCT coefficients of the grey image, symmetrised
      under transposition (35 without DC), also invariant to flips and quarter turns.

    It captures colour, texture and coarse layout; it does not know objects, so two
    photos of one product from very different angles look less alike than to a CNN.
    """

    model_id = "local-hsv-hog-dct-v1"
    dim = 128 + 128 + 35
    _size = 64
    _weights = (0.4, 0.35, 0.25)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack([self._one(img) for img in images]))

    def _one(self, img: Image.Image) -> np.ndarray:
        small = trim_uniform_border(img.convert("RGB")).resize(
            (self._size, self._size), Image.Resampling.BILINEAR
        )
        grey = np.asarray(small.convert("L"), dtype=np.float64)
        blocks = (_colour_histogram(small), _dihedral_hog(grey), _dct_layout(grey))
        return np.concatenate(
            [_unit(b) * np.sqrt(w) for w, b in zip(self._weights, blocks, strict=True)]
        )


def _unit(block: np.ndarray) -> np.ndarray:
    # Centred first: raw histograms are all positive, so every pair would score ~0.9.
    centred = block - block.mean()
    return (centred / (np.linalg.norm(centred) or 1.0)).astype(np.float32)


def _colour_histogram(img: Image.Image) -> np.ndarray:
    hsv = np.asarray(img.convert("HSV"), dtype=np.int32)
    h, s, v = hsv[..., 0] * 8 // 256, hsv[..., 1] * 4 // 256, hsv[..., 2] * 4 // 256
    hist = np.bincount((h * 16 + s * 4 + v).ravel(), minlength=128).astype(np.float64)
    return np.sqrt(hist / hist.sum())


def _hog(grey: np.ndarray, cells: int = 4, bins: int = 8) -> np.ndarray:
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    bin_idx = np.minimum((angle / np.pi * bins).astype(np.int64), bins - 1)
    step = grey.shape[0] // cells
    cell_idx = (np.arange(grey.shape[0]) // step)[:, None] * cells + (
        np.arange(grey.shape[1]) // step
    )[None, :]
    flat = (cell_idx * bins + bin_idx).ravel()
    return np.bincount(flat, weights=magnitude.ravel(), minlength=cells * cells * bins)


def _dihedral_hog(grey: np.ndarray) -> np.ndarray:
    variants = [np.rot90(grey, k) for k in range(4)]
    variants += [np.fliplr(v) for v in variants]
    return np.mean([_hog(np.ascontiguousarray(v)) for v in variants], axis=0)


def _dct_layout(grey: np.ndarray) -> np.ndarray:
    small = np.asarray(
        Image.fromarray(grey.astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    low = np.abs(scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)[:8, :8])
    sym = (low + low.T) / 2
    return sym[np.triu_indices(8)][1:]
