"""An :class:`~photogroup.embed.Embedder` backed by a user-supplied ONNX image encoder.

The model is any ONNX graph taking one float image tensor (``N x 3 x H x W`` or
``N x H x W x 3``) and returning features; :class:`Preprocessing` describes how photos
become that tensor and how the output becomes one vector per image. It runs on CPU through
onnxruntime, an optional dependency (``pip install -e '.[onnx]'``) imported only when an
``OnnxEmbedder`` is built, so ``import photogroup`` stays light.

``model_id`` is ``onnx-<sha256 of the model file>[:12]-<hash of the preprocessing>``: any
change to the weights or to how images are fed invalidates memoised embeddings, while a
copy of the same file at another path (or in another cache) keeps them. Weights stored as
ONNX external data (files beside the model, for models over 2 GB) are not hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from photogroup.embed import l2_normalise
from photogroup.features import trim_uniform_border
from photogroup.onnx_session import INSTALL_HINT, OnnxModelError, OnnxProvider, show

__all__ = ["INSTALL_HINT", "OnnxEmbedder", "OnnxModelError", "Preprocessing"]

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input, and the model's output an embedding.

    Pixels go through ``(value * scale - mean) / std`` per channel, with ``mean`` and
    ``std`` in the order the model receives the channels (after ``channel_order``). Every
    field is part of ``model_id``, except ``input_name``/``output_name`` which enter it as
    resolved, so naming the default tensor explicitly does not change the id.
    """

    #: (width, height) fed to the model; None takes it from the model's fixed input shape.
    size: tuple[int, int] | None = None
    #: squash: resize to ``size`` ignoring aspect; center_crop: scale to cover, crop centre.
    resize: Literal["squash", "center_crop"] = "squash"
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet, the usual default
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    #: Crop padding/letterboxing of one colour first, as the local embedder does.
    trim_border: bool = False
    input_name: str | None = None  # None: the model's first input
    output_name: str | None = None  # None: the model's first output
    #: For outputs with more than 2 dims: average every axis but batch and ``feature_axis``
    #: (global average pooling of a feature map, or mean over tokens), or flatten them.
    pooling: Literal["average", "flatten"] = "average"
    #: Axis of the output holding features when pooling: 1 for NCHW maps, -1 for NHWC maps
    #: or ``N x tokens x D`` transformer outputs.
    feature_axis: int = 1

    def __post_init__(self) -> None:
        # Dagster config hands over lists; tuples keep the dataclass hashable and comparable.
        for name in ("size", "mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        _check_choice("resize", self.resize, ("squash", "center_crop"))
        _check_choice("interpolation", self.interpolation, tuple(_RESAMPLING))
        _check_choice("channel_order", self.channel_order, ("RGB", "BGR"))
        _check_choice("layout", self.layout, ("NCHW", "NHWC"))
        _check_choice("pooling", self.pooling, ("average", "flatten"))
        if self.size is not None and (
            len(self.size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.size)
        ):
            raise ValueError(f"size must be two positive integers (width, height), not {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per channel (3 each)")
        if not all(math.isfinite(s) and s != 0 for s in self.std):
            raise ValueError(f"std values must be finite and non-zero, not {self.std}")
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be finite, not {self.scale}")

    def digest(self) -> str:
        """Short hash of every setting; part of ``model_id``."""
        settings = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(settings.encode()).hexdigest()[:8]

    def to_array(self, img: Image.Image) -> np.ndarray:
        """One image as ``H x W x 3`` float32, normalised, in the model's channel order."""
        if self.size is None:
            raise ValueError("Preprocessing.size is unset (it is resolved by OnnxEmbedder)")
        img = img.convert("RGB")
        if self.trim_border:
            img = trim_uniform_border(img)
        resample = _RESAMPLING[self.interpolation]
        if self.resize == "squash":
            img = img.resize(self.size, resample)
        else:
            img = ImageOps.fit(img, self.size, method=resample, centering=(0.5, 0.5))
        pixels = np.asarray(img, dtype=np.float32)
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return (pixels * np.float32(self.scale) - mean) / std


class OnnxEmbedder(OnnxProvider):
    """Runs an ONNX image encoder on CPU; rows are float32 and L2-normalised."""

    preprocessing: Preprocessing

    def __init__(
        self,
        model_path: str | Path,
        preprocessing: Preprocessing | None = None,
        *,
        batch_size: int = 16,
        intra_op_num_threads: int = 1,
    ) -> None:
        pre = preprocessing or Preprocessing()
        _, model_output = self._open(
            model_path,
            pre,
            lambda shape, path: _resolve_size(shape, pre, path),
            batch_size,
            intra_op_num_threads,
        )
        self.model_id = f"onnx-{self.model_sha256[:12]}-{self.preprocessing.digest()}"
        declared = _declared_dim(model_output.shape, self.preprocessing)
        # Dynamic output dims are learned from one run on a blank image.
        self.dim: int = declared or self._run([Image.new("RGB", (8, 8))]).shape[1]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [
            self._run(images[start : start + self.batch_size])
            for start in range(0, len(images), self.batch_size)
        ]
        rows = np.concatenate(chunks)
        if rows.shape[1] != self.dim:
            raise OnnxModelError(
                f"{self.model_path}: output '{self.output_name}' gave {rows.shape[1]} features "
                f"per image, expected {self.dim}"
            )
        return l2_normalise(rows)

    def _run(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Raw (un-normalised) ``len(images) x features`` for one chunk."""
        pre = self.preprocessing
        batch = np.stack([pre.to_array(img) for img in images])
        count = len(batch)
        if pre.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        try:
            out, _ = self._run_model(batch)
        except OnnxModelError as exc:
            raise OnnxModelError(f"{self.model_path}: {exc} ({pre.layout})") from exc
        count_run = max(count, self.fixed_batch or 0)
        if out.ndim < 2 or out.shape[0] != count_run:
            raise OnnxModelError(
                f"{self.model_path}: output '{self.output_name}' has shape {list(out.shape)}; "
                f"expected the batch of {count_run} first, then features"
            )
        return _pool(out, pre).astype(np.float32)[:count]


def _resolve_size(shape: Sequence[Any], pre: Preprocessing, path: Path) -> tuple[int, int]:
    """The (width, height) to feed, checked against the model's input shape."""
    wanted = "N x 3 x H x W" if pre.layout == "NCHW" else "N x H x W x 3"
    if len(shape) != 4:
        raise OnnxModelError(
            f"{path}: input has shape {show(shape)} but preprocessing produces {wanted} "
            f"(layout {pre.layout}); the model needs a 4-d image input"
        )
    channels, height, width = (
        (shape[1], shape[2], shape[3]) if pre.layout == "NCHW" else (shape[3], shape[1], shape[2])
    )
    if isinstance(channels, int) and channels != 3:
        other = "NHWC" if pre.layout == "NCHW" else "NCHW"
        raise OnnxModelError(
            f"{path}: input has shape {show(shape)}, which with layout {pre.layout} means "
            f"{channels} channels, not 3; is the layout {other}?"
        )
    model_size = (width, height)
    if pre.size is None:
        if not all(isinstance(v, int) for v in model_size):
            raise OnnxModelError(
                f"{path}: input shape {show(shape)} has a dynamic height or width; set "
                "Preprocessing.size"
            )
        return (int(width), int(height))
    for axis, fixed, chosen in (("width", width, pre.size[0]), ("height", height, pre.size[1])):
        if isinstance(fixed, int) and fixed != chosen:
            raise OnnxModelError(
                f"{path}: input has shape {show(shape)} ({pre.layout}), {axis} {fixed}, but "
                f"preprocessing size is {pre.size[0]}x{pre.size[1]} (width x height)"
            )
    return pre.size


def _declared_dim(shape: Sequence[Any], pre: Preprocessing) -> int | None:
    """Embedding size from the output's static shape, or None if it is dynamic."""
    rest = list(shape[1:])
    if not rest:
        return None
    if len(rest) == 1 or pre.pooling == "flatten":
        return math.prod(rest) if all(isinstance(v, int) for v in rest) else None
    try:
        features = shape[pre.feature_axis]
    except IndexError:
        return None
    return features if isinstance(features, int) else None


def _pool(out: np.ndarray, pre: Preprocessing) -> np.ndarray:
    if out.ndim == 2:
        return out
    if pre.pooling == "flatten":
        return out.reshape(out.shape[0], -1)
    if not -out.ndim < pre.feature_axis < out.ndim or pre.feature_axis % out.ndim == 0:
        raise OnnxModelError(
            f"feature_axis {pre.feature_axis} is not a non-batch axis of the "
            f"{out.ndim}-d output {list(out.shape)}"
        )
    axis = pre.feature_axis % out.ndim
    spatial = tuple(a for a in range(1, out.ndim) if a != axis)
    return out.mean(axis=spatial, dtype=np.float64)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
