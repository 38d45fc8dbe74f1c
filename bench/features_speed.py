"""Feature extraction speed against plain Pillow decoding and imagededup's PHash, same files.

Three ways through the same files, one after the other on this machine, best of
``--repeats`` passes each (the machine is shared; the best pass is the least disturbed):

* plain: ``Image.open(path).convert("RGB")``, a full decode, what any tool pays at least;
* ours: ``photogroup.decode_image(bytes)`` (validation, EXIF orientation, JPEG draft
  decoding to the 512 px working copy) then ``compute_features`` (five imagehash hashes, the
  dihedral pHash, palette, sharpness); embedding is timed apart, for information;
* imagededup: ``PHash().encode_image(image_file=path)`` in its own venv (see
  ``imagededup_env.py``), timed inside that process, so start-up and imports do not count.

Files: 40 phone-sized JPEGs (real photos cropped to 4:3 or 3:2, upscaled with LANCZOS to
4000x3000 or 3000x2000, sensor-like noise so they compress like camera output, about 2 MB at
quality 90, every fifth one stored sideways with an EXIF orientation tag), generated once into
``bench/.cache/phone-<key>/``; and the labelled sets' files when run from ``grouping.py``.

    .venv/bin/python bench/features_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import photos  # bench/photos.py: this file runs only as a script
import PIL
from grouping_before import BASELINE_COMMIT, baseline_tree
from imagededup_env import run_worker
from PIL import Image

from photogroup import LocalEmbedder, compute_features, decode_image

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PHONE_COUNT = 40
PHONE_SIZES = ((4000, 3000), (3000, 2000))
_ORIENTATION = 0x0112


def phone_jpegs(
    count: int = PHONE_COUNT,
    cache: Path = CACHE,
    sizes: Sequence[tuple[int, int]] = PHONE_SIZES,
    name: str = "phone",
    sources: Sequence[str] = (*photos.COLOUR, *photos.GREY),
) -> list[Path]:
    """``count`` camera-like JPEGs of ``sizes`` from the photos ``sources`` (each in turn),
    made once (about a minute) and then read from the cache folder ``<name>-<key>``."""
    key = hashlib.sha256(
        Path(__file__).read_bytes() + f"{count}/{PIL.__version__}/{sizes}/{sources}".encode()
    ).hexdigest()[:12]
    folder = cache / f"{name}-{key}"
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        rng = np.random.default_rng(11)
        for i in range(count):
            _phone_photo(photos.load(sources[i % len(sources)]), sizes[i % len(sizes)], rng).save(
                tmp / f"phone_{i:02d}.jpg", **_save_options(i)
            )
        tmp.rename(folder)
        for stale in cache.glob(f"{name}-*"):  # made by an earlier version of this file
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
    return sorted(folder.glob("*.jpg"))


def _phone_photo(img: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    aspect = size[0] / size[1]
    # The largest crop of that aspect ratio, at a random place.
    w, h = img.size
    cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    big = img.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.LANCZOS)
    arr = np.asarray(big, dtype=np.float32)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * 5.0
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _save_options(index: int) -> dict:
    options: dict = {"format": "JPEG", "quality": 90}
    if index % 5 == 0:  # stored landscape, displayed portrait, as phones do
        exif = Image.Exif()
        exif[_ORIENTATION] = 6 if index % 10 == 0 else 8
        options["exif"] = exif
    return options


def _plain(path: Path) -> None:
    with Image.open(path) as img:
        img.convert("RGB")  # convert forces the full decode


def _ours(path: Path) -> None:
    compute_features(decode_image(path.read_bytes()).image)


def _ours_no_keypoints(path: Path) -> None:
    compute_features(decode_image(path.read_bytes()).image, keypoints=False)


def _seconds(step: Callable[[Path], None], paths: Sequence[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        step(path)
    return time.perf_counter() - start


def measure(paths: Sequence[Path], repeats: int = 3) -> dict[str, float]:
    """Images per second of each way through ``paths`` (plus embedding, for information).

    The ways take turns within each round, so a burst of load from another process on this
    shared machine hits one round of each rather than all rounds of one.
    """
    for path in paths:  # into the page cache, so no way pays the disk for the others
        path.read_bytes()
    _plain(paths[0])  # warm-up: lazy imports, first-call caches
    _ours(paths[0])
    files = [str(p) for p in paths]
    best = dict.fromkeys(("plain", "ours", "ours_listed", "phash"), float("inf"))
    for _ in range(repeats):
        best["plain"] = min(best["plain"], _seconds(_plain, paths))
        best["ours"] = min(best["ours"], _seconds(_ours, paths))
        best["ours_listed"] = min(best["ours_listed"], _seconds(_ours_no_keypoints, paths))
        speed = run_worker({"op": "speed", "method": "PHash", "files": files, "repeats": 1})
        best["phash"] = min(best["phash"], speed["seconds"])
    works = [decode_image(p.read_bytes()).image for p in paths]
    embedder = LocalEmbedder()
    embedder.embed(works[:1])
    start = time.perf_counter()
    embedder.embed(works)
    best["embed"] = time.perf_counter() - start
    return {way: len(paths) / seconds for way, seconds in best.items()}


def report(title: str, paths: Sequence[Path], repeats: int = 3) -> dict[str, float]:
    """Measure and print; returns the images/s of each way."""
    pixels = [Image.open(p).size for p in paths[:200]]
    megapixels = sum(w * h for w, h in pixels) / len(pixels) / 1e6
    mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
    r = measure(paths, repeats)
    print(f"{title}: {len(paths)} files, mean {megapixels:.1f} MP, {mb:.2f} MB")
    print(f"  plain Pillow full decode          {r['plain']:8.1f} images/s")
    print(
        f"  ours: decode_image + features     {r['ours_listed']:8.1f} images/s  (every hash, "
        "the invariant hash, colours, sharpness)"
    )
    print(
        f"  ours, plus ORB keypoints          {r['ours']:8.1f} images/s  (what the pipeline runs)"
    )
    print(f"  imagededup PHash encode_image     {r['phash']:8.1f} images/s")
    print(f"  (our embedding of the work copies {r['embed']:8.1f} images/s, not in the ratios)")
    for label, key in (("features", "ours_listed"), ("features + keypoints", "ours")):
        print(
            f"  {label}: ours / plain decode = {r[key] / r['plain']:.2f}x   "
            f"ours / imagededup PHash = {r[key] / r['phash']:.2f}x"
        )
    return r


_WORKER = """
import io, json, sys, time
from PIL import Image
from photogroup import compute_features, decode_image
paths = json.loads(sys.argv[1])
datas = [open(p, "rb").read() for p in paths]
def draft(d):
    with Image.open(io.BytesIO(d)) as im:
        im.draft("RGB", (512, 512))
        im.convert("RGB")
def ours(d):
    compute_features(decode_image(d).image)
out = {}
for f in (draft, ours):
    f(datas[0])
    start = time.perf_counter()
    for d in datas:
        f(d)
    out[f.__name__] = time.perf_counter() - start
print(json.dumps(out))
"""


def report_against_baseline(paths: Sequence[Path], repeats: int = 3) -> dict[str, float]:
    """Features per second of this tree and of ``BASELINE_COMMIT`` on the same files, each
    as a ratio to Pillow's draft decoding (to the 512 px working size) measured in the same
    process. Runs alternate between the two trees, one process each, single-threaded."""
    import json
    import os
    import subprocess
    import sys

    root = HERE.parent
    best = {"now": {"draft": 1e9, "ours": 1e9}, "before": {"draft": 1e9, "ours": 1e9}}
    with baseline_tree() as old:
        for _ in range(repeats):
            for label, tree in (("before", old), ("now", str(root))):
                env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
                out = subprocess.run(
                    [sys.executable, "-c", _WORKER, json.dumps([str(p) for p in paths])],
                    cwd=tree,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                for way, seconds in json.loads(out.stdout).items():
                    best[label][way] = min(best[label][way], seconds)
    n = len(paths)
    megapixels = sum(w * h for w, h in (Image.open(p).size for p in paths)) / n / 1e6
    print(f"  {n} phone JPEGs, mean {megapixels:.1f} MP; one thread; draft decode = Pillow "
          "draft to 512 px")  # fmt: skip
    ratio = {}
    for label in ("before", "now"):
        b = best[label]
        ratio[label] = b["ours"] / b["draft"]
        name = f"{label} ({BASELINE_COMMIT})" if label == "before" else label
        print(f"  {name:<18} features {n / b['ours']:6.1f} images/s, draft decode "
              f"{n / b['draft']:6.1f} images/s: features cost {ratio[label]:.2f}x "
              "a draft decode")  # fmt: skip
    print(
        f"  features now cost {ratio['now'] / ratio['before']:.2f}x what they did (target <= 1.5x)"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report("phone-sized JPEGs", phone_jpegs(), args.repeats)
    report_against_baseline(phone_jpegs(), args.repeats)


if __name__ == "__main__":
    main()
