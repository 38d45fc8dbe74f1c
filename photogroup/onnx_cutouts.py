"""Background removal ("cut-outs") with a user-supplied salient-object ONNX model, on CPU.

The model has U²-Net-style I/O (U²-Net, U²-NetP, ISNet and their rembg exports): one float
input ``N x 3 x H x W`` (RGB, 320 x 320 by default), and a saliency map ``N x 1 x H x W``
(or ``N x H x W``) as its first output, or the output named in
:class:`SaliencyPreprocessing`. Each image is resized to the model's size, scaled to [0, 1]
(``/255``; or by its brightest value, as U²-Net's reference data loader and rembg do, with
``scale="max"``) and normalised with ImageNet's mean and std. Each map is min-max normalised
on its own (as U²-Net's reference code does: the fused output is a sigmoid whose range
varies per image), resized bilinearly to the image's size and becomes the mask
``round(255 * value)``: mode "L", 255 foreground. A constant map (nothing salient, or a
degenerate model) gives an all-zero mask, never an all-255 one.

Images run ``batch_size`` at a time (one at a time on a model whose batch dimension is fixed
to 1); normalisation is per image, so a batch gives the masks its images give alone. A
failure on one image (a corrupt or truncated file, a zero-size image, a non-finite map) is
that image's :class:`CutoutOutcome` error; a batch whose inference fails is rerun one image
at a time, so only the images that fail alone are reported. A model whose inputs or outputs
do not fit raises :class:`~photogroup.onnx_embedder.OnnxModelError` (a ``ValueError``) when
the provider is built.

``model_id`` is ``onnx-cutout-<sha256 of the model file>[:12]-<hash of the settings>``, like
the ONNX embedder's, so memoised masks follow the weights and the preprocessing, not the
path. onnxruntime is the optional ``onnx`` extra, imported only when a provider is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from photogroup.onnx_session import OnnxModelError, OnnxProvider, show
from photogroup.providers import CutoutOutcome, clip_reason, latency_percentiles

log = logging.getLogger(__name__)

#: U²-Net's training and export size.
DEFAULT_SIZE = (320, 320)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Bumped when the map-to-mask steps change, so memoised masks are recomputed.
_POSTPROCESS = "minmax-bilinear-round-v1"
_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class SaliencyPreprocessing:
    """How a photo becomes the model's input. Every field is part of ``model_id`` (the tensor
    names as resolved, so naming the default tensor does not change it)."""

    #: (width, height) fed to the model; None: the model's fixed size, else 320 x 320.
    size: tuple[int, int] | None = None
    interpolation: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"
    #: "255": pixels / 255; "max": pixels / the image's brightest value (U²-Net, rembg).
    scale: Literal["255", "max"] = "255"
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB order
    std: tuple[float, float, float] = IMAGENET_STD
    input_name: str | None = None  # None: the model's first input
    output_name: str | None = None  # None: the model's first output (U²-Net's fused map)

    def __post_init__(self) -> None:
        # Dagster config hands over lists; tuples keep the dataclass hashable.
        for name in ("size", "mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.interpolation not in _RESAMPLING:
            raise ValueError(
                f"interpolation must be one of {', '.join(_RESAMPLING)}; got {self.interpolation!r}"
            )
        if self.scale not in ("255", "max"):
            raise ValueError(f"scale must be '255' or 'max'; got {self.scale!r}")
        if self.size is not None and (
            len(self.size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.size)
        ):
            raise ValueError(f"size must be two positive integers (width, height), not {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per channel (3 each)")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError(f"mean values must be finite, not {self.mean}")
        if not all(math.isfinite(s) and s != 0 for s in self.std):
            raise ValueError(f"std values must be finite and non-zero, not {self.std}")

    def digest(self) -> str:
        """Short hash of every setting and the post-processing version; part of ``model_id``."""
        settings = {**dataclasses.asdict(self), "postprocess": _POSTPROCESS}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]

    def to_array(self, img: Image.Image) -> np.ndarray:
        """One image as ``3 x H x W`` float32, normalised."""
        if self.size is None:
            raise ValueError("SaliencyPreprocessing.size is unset (OnnxCutouts resolves it)")
        if img.width < 1 or img.height < 1:
            raise ValueError(f"the image is empty ({img.width}x{img.height} px)")
        pixels = np.asarray(
            img.convert("RGB").resize(self.size, _RESAMPLING[self.interpolation]),
            dtype=np.float32,
        )
        if self.scale == "max":
            pixels = pixels / max(float(pixels.max()), 1e-6)
        else:
            pixels = pixels / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1)


class OnnxCutouts(OnnxProvider):
    """Saliency-map masks from a U²-Net-style ONNX model, on CPU."""

    preprocessing: SaliencyPreprocessing

    def __init__(
        self,
        model_path: str | Path,
        preprocessing: SaliencyPreprocessing | None = None,
        *,
        batch_size: int = 4,
        intra_op_num_threads: int = 1,
        workers: int = 1,
        free_image_dims: bool = False,
    ) -> None:
        """``batch_size`` images per run (a fixed batch dimension in the model wins);
        ``intra_op_num_threads`` bounds onnxruntime's threads per run (the pipeline shares
        cores); ``workers`` batches run at once, each on its own thread (one session is
        safe to run from several threads), with their resizing and post-processing."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        self.workers = int(workers)
        pre = preprocessing or SaliencyPreprocessing()
        _, model_output = self._open(
            model_path,
            pre,
            lambda shape, path: _resolve_size(shape, pre.size, path),
            batch_size,
            intra_op_num_threads,
            free_image_dims,
        )
        self.model_id = f"onnx-cutout-{self.model_sha256[:12]}-{self.preprocessing.digest()}"

        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._inference_seconds = 0.0
        self._check_output(model_output)

    def __repr__(self) -> str:
        width, height = self.preprocessing.size or DEFAULT_SIZE
        return (
            f"OnnxCutouts(model_path={str(self.model_path)!r}, model_id={self.model_id!r}, "
            f"size={width}x{height}, batch_size={self.batch_size}, "
            f"intra_op_num_threads={self.intra_op_num_threads}, workers={self.workers})"
        )

    # -- public --------------------------------------------------------------------------

    def cut_out(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        """One outcome per image, in order; failures are in the outcome, never raised."""
        outcomes: list[CutoutOutcome | None] = [None] * len(images)
        chunks = [
            range(start, min(start + self.batch_size, len(images)))
            for start in range(0, len(images), self.batch_size)
        ]
        if self.workers > 1 and len(chunks) > 1:
            # Each chunk writes only its own slots of ``outcomes``.
            with ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-cutout") as pool:
                list(pool.map(lambda chunk: self._run_chunk(images, chunk, outcomes), chunks))
        else:
            for chunk in chunks:
                self._run_chunk(images, chunk, outcomes)
        done = [o or CutoutOutcome(None, "client_error: no outcome") for o in outcomes]
        with self._lock:
            self._counts["images"] += len(done)
            for outcome in done:
                if outcome.ok:
                    self._latencies.append(outcome.seconds)
                else:
                    self._counts["images_failed"] += 1
        return done

    def stats(self) -> dict[str, int | float]:
        """Counters since construction, as asset metadata."""
        with self._lock:
            counts = dict(self._counts)
            latencies = list(self._latencies)
            inference = self._inference_seconds
        return {
            "images": counts.get("images", 0),
            "images_failed": counts.get("images_failed", 0),
            "batches": counts.get("batches", 0),
            "batches_rerun_singly": counts.get("batches_rerun_singly", 0),
            "inference_seconds": round(inference, 3),
            **latency_percentiles(latencies),
            "batch_size": self.batch_size,
            "intra_op_num_threads": self.intra_op_num_threads,
            "workers": self.workers,
        }

    # -- one chunk -----------------------------------------------------------------------

    def _run_chunk(
        self,
        images: Sequence[Image.Image],
        chunk: range,
        outcomes: list[CutoutOutcome | None],
    ) -> None:
        arrays: dict[int, np.ndarray] = {}
        spent: dict[int, float] = {}  # seconds of each image's own steps so far
        for i in chunk:
            started = time.monotonic()
            try:
                arrays[i] = self.preprocessing.to_array(images[i])
            except Exception as exc:  # Pillow's decoders raise many types on a bad file
                outcomes[i] = self._failed(i, "image_error", exc, time.monotonic() - started)
            spent[i] = time.monotonic() - started
        if not arrays:
            return
        try:
            maps = self._infer(list(arrays.values()))
        except OnnxModelError as exc:
            if len(arrays) == 1:
                (i,) = arrays
                outcomes[i] = self._failed(i, "inference_error", exc, spent[i])
                return
            # A batch can fail where its images alone would not (a model that only runs
            # batch 1 though it declares a dynamic batch): find the images that fail alone.
            log.warning("ONNX cut-out batch failed (%s); rerunning its images one by one", exc)
            self._count("batches_rerun_singly")
            for i in arrays:
                self._run_chunk(images, range(i, i + 1), outcomes)
            return
        share = maps.seconds / len(arrays)  # the batch's run, split evenly
        for i, values in zip(arrays, maps.values, strict=True):
            started = time.monotonic()
            try:
                mask = self._mask(values, images[i])
            except ValueError as exc:
                seconds = spent[i] + share + time.monotonic() - started
                outcomes[i] = self._failed(i, "bad_output", exc, seconds)
                continue
            seconds = spent[i] + share + time.monotonic() - started
            outcomes[i] = CutoutOutcome(mask, None, seconds, None)

    def _mask(self, saliency: np.ndarray, image: Image.Image) -> Image.Image:
        """The "L" mask of ``image`` from its saliency map (subclasses refine it);
        ValueError for a map that cannot be one."""
        return _to_mask(saliency, image.size)

    def _infer(self, arrays: list[np.ndarray]) -> _Maps:
        """Saliency maps (``count x h x w`` float64) for preprocessed images."""
        count = len(arrays)
        out, seconds = self._run_model(np.stack(arrays))
        rows = max(count, self.fixed_batch or 0)
        with self._lock:
            self._counts["batches"] += 1
            self._inference_seconds += seconds
        if out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 3 or out.shape[0] != rows:
            raise OnnxModelError(
                f"output '{self.output_name}' has shape {list(out.shape)}; expected "
                f"[{rows}, 1, H, W] or [{rows}, H, W]"
            )
        return _Maps(out[:count].astype(np.float64), seconds)

    def _check_output(self, model_output: Any) -> None:
        """Reject an output that cannot be a saliency map; probe one whose shape is dynamic."""
        if model_output.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise OnnxModelError(
                f"{self.model_path}: output '{model_output.name}' is {model_output.type}; "
                "a saliency map must be a float tensor"
            )
        shape = list(model_output.shape or [])
        one_channel = len(shape) == 3 or (
            len(shape) == 4 and (shape[1] == 1 or not isinstance(shape[1], int))
        )
        if shape and not one_channel:
            raise OnnxModelError(
                f"{self.model_path}: output '{model_output.name}' has shape {show(shape)}; "
                "a saliency map is N x 1 x H x W (or N x H x W): is this a salient-object "
                "model such as U²-Net?"
            )
        if shape and all(isinstance(v, int) for v in shape[1:]):
            return
        # Symbolic or unknown dims: one run on a blank image shows what the model returns.
        try:
            self._infer([self.preprocessing.to_array(Image.new("RGB", (8, 8)))])
        except OnnxModelError as exc:
            raise OnnxModelError(f"{self.model_path}: {exc}") from exc
        with self._lock:  # the probe is not the caller's work
            self._counts.clear()
            self._inference_seconds = 0.0

    # -- bookkeeping -----------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _failed(self, index: int, kind: str, exc: Exception, seconds: float) -> CutoutOutcome:
        reason = clip_reason(f"{kind}: {type(exc).__name__}: {exc}")
        log.warning("ONNX cut-out failed for image %d: %s", index, reason)
        return CutoutOutcome(None, reason, seconds, None)


@dataclass
class _Maps:
    values: np.ndarray  # count x h x w
    seconds: float  # the inference run's wall time


def _to_mask(saliency: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Min-max normalise, resize to ``size`` (width, height) bilinearly, 0-255 "L" mask."""
    if not np.isfinite(saliency).all():
        raise ValueError("the saliency map has non-finite values")
    low, high = float(saliency.min()), float(saliency.max())
    if high - low <= 1e-12:
        return Image.new("L", size, 0)  # nothing stands out: no foreground
    unit = ((saliency - low) / (high - low)).astype(np.float32)
    resized = np.asarray(Image.fromarray(unit, mode="F").resize(size, Image.Resampling.BILINEAR))
    return Image.fromarray(np.rint(np.clip(resized, 0.0, 1.0) * 255).astype(np.uint8), mode="L")


def _resolve_size(
    shape: Sequence[Any], size: tuple[int, int] | None, path: Path
) -> tuple[int, int]:
    """The (width, height) to feed, checked against the model's ``N x 3 x H x W`` input."""
    if len(shape) != 4:
        raise OnnxModelError(
            f"{path}: input has shape {show(shape)}; a U²-Net-style model takes one "
            "N x 3 x H x W image tensor"
        )
    channels, height, width = shape[1], shape[2], shape[3]
    if isinstance(channels, int) and channels != 3:
        raise OnnxModelError(
            f"{path}: input has shape {show(shape)}, {channels} channels; expected "
            "N x 3 x H x W (RGB, channels first)"
        )
    if size is None:
        fixed = [v if isinstance(v, int) else None for v in (width, height)]
        if fixed[0] is not None and fixed[1] is not None:
            return (fixed[0], fixed[1])
        return (fixed[0] or DEFAULT_SIZE[0], fixed[1] or DEFAULT_SIZE[1])
    for axis, model_value, chosen in (("width", width, size[0]), ("height", height, size[1])):
        if isinstance(model_value, int) and model_value != chosen:
            raise OnnxModelError(
                f"{path}: input has shape {show(shape)}, {axis} {model_value}, but the "
                f"preprocessing size is {size[0]}x{size[1]} (width x height)"
            )
    return size
