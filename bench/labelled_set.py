"""Two disjoint labelled near-duplicate sets, calibration and evaluation, from real photos.

Each photo gives its original plus 11 edited copies (``bench/transforms.py``, families
taken round-robin over the set so each family appears about equally often). Labels:

* ``photo`` (strict level): the photo an item was made from;
* ``product``: the photo's product; two viewpoints of one object share it;
* ``family``: ``original`` or the transformation family.

Hard negatives in both sets, never in both from the same pixels:

* look-alike grey textures (skimage's brick, grass, gravel): calibration gets the top half
  of each, evaluation the bottom half (the only bundled textures, so split by region);
* two photos of one object from two viewpoints: the one real pair available offline
  (skimage's stereo motorcycle, left and right camera), split in two: calibration gets the
  left half of both views, evaluation the right half. Different photos at the strict level,
  one product.

Files are JPEG (quality 95, as a shop's upload) under ``bench/.cache/labelled-<key>/``; the
key hashes the code that makes them, so a change regenerates them. imagededup and our
pipeline read these same files.

    .venv/bin/python bench/labelled_set.py   # build (if needed) and describe
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

try:  # imported as bench.labelled_set
    from bench import photos, transforms
except ImportError:  # run as a script, bench/ on sys.path
    import photos  # type: ignore[no-redef]
    import transforms  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SEED = 7
PER_PHOTO = 11
JPEG_QUALITY = 95

#: Split by hand so that each side has colour and grey photos; fixed, never tuned.
CALIBRATION_PHOTOS = (
    "skimage:immunohistochemistry", "skimage:retina", "sklearn:flower",
    "skimage:hubble_deep_field", "skimage:coins", "skimage:clock", "skimage:cell",
    "skimage:text",
)  # fmt: skip
EVALUATION_PHOTOS = (
    "skimage:astronaut", "skimage:chelsea", "skimage:rocket", "sklearn:china",
    "matplotlib:grace_hopper", "skimage:camera", "skimage:moon", "skimage:page",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    path: Path
    photo: str  # strict label
    product: str  # product label
    family: str  # "original" or a key of transforms.FAMILIES
    kind: str  # "photo", "texture" (look-alike negative) or "viewpoint" (same product)

    def read(self) -> bytes:
        return self.path.read_bytes()

    def image(self) -> Image.Image:
        with Image.open(self.path) as img:
            return img.convert("RGB")


@dataclass(frozen=True)
class LabelledSet:
    name: str
    items: list[Item]

    def describe(self) -> str:
        kinds = Counter(item.kind for item in self.items if item.family == "original")
        return (
            f"{self.name}: {len(self.items)} items from {len({i.photo for i in self.items})} "
            f"photos ({kinds['photo']} photos, {kinds['texture']} look-alike textures, "
            f"{kinds['viewpoint']} viewpoint photos of {kinds['viewpoint'] // 2} products), "
            f"{len({i.product for i in self.items})} products"
        )


def _short(name: str) -> str:
    return name.partition(":")[2]


def _texture_half(name: str, half: str) -> Image.Image:
    img = photos.load(name)
    mid = img.height // 2
    return img.crop((0, 0, img.width, mid) if half == "top" else (0, mid, img.width, img.height))


def _viewpoint_halves(half: str) -> tuple[Image.Image, Image.Image]:
    """The one real two-viewpoint pair that ships offline (scikit-image's stereo motorcycle),
    split in two: calibration gets the left half of both views, evaluation the right half.
    Each half keeps the real parallax between the cameras, and both hold part of the
    motorcycle and of the floor, so both are as hard."""
    left, right = photos.stereo_pair()
    mid = left.width // 2
    box = (0, 0, mid, left.height) if half == "top" else (mid, 0, left.width, left.height)
    return left.crop(box), right.crop(box)


def _sources(name: str) -> list[tuple[str, str, str, Image.Image]]:
    """(photo label, product label, kind, image) of every photo in one set."""
    listed = CALIBRATION_PHOTOS if name == "calibration" else EVALUATION_PHOTOS
    out = [(_short(p), _short(p), "photo", photos.load(p)) for p in listed]
    half = "top" if name == "calibration" else "bottom"
    out += [
        (f"{_short(t)}-{half}", f"{_short(t)}-{half}", "texture", _texture_half(t, half))
        for t in photos.TEXTURES
    ]
    a, b = _viewpoint_halves(half)
    product = f"motorcycle-{half}"
    out += [(f"{product}-view-{v}", product, "viewpoint", img) for v, img in (("a", a), ("b", b))]
    return out


def _edits(img: Image.Image, rng: np.random.Generator, start: int) -> tuple[list, int]:
    """``PER_PHOTO`` edits round-robin from ``start``, skipping ones that change nothing
    (grayscale or desaturation of a grey photo would be an exact copy, not a test)."""
    names = list(transforms.FAMILIES)
    original = np.asarray(img)
    out: list[tuple[str, Image.Image]] = []
    position = start
    while len(out) < PER_PHOTO:
        family = names[position % len(names)]
        position += 1
        edited = transforms.FAMILIES[family](img, rng)
        if edited.size == img.size and np.array_equal(np.asarray(edited), original):
            continue
        out.append((family, edited))
    return out, position


def cache_key() -> str:
    """Hash of the code and library that decide the files' bytes."""
    digest = hashlib.sha256()
    for source in (transforms.__file__, photos.__file__, __file__):
        digest.update(Path(source).read_bytes())
    digest.update(f"{SEED}/{PER_PHOTO}/{JPEG_QUALITY}/{PIL.__version__}".encode())
    return digest.hexdigest()[:12]


def _generate(name: str, folder: Path) -> list[Item]:
    folder.mkdir(parents=True)
    items = []
    position = 0
    for index, (photo, product, kind, img) in enumerate(_sources(name)):
        rng = np.random.default_rng([SEED, index, 0 if name == "calibration" else 1])
        edits, position = _edits(img, rng, position)
        for k, (family, edited) in enumerate([("original", img), *edits]):
            path = folder / f"{photo}__{k:02d}_{family}.jpg"
            edited.save(path, format="JPEG", quality=JPEG_QUALITY)
            items.append(Item(path, photo, product, family, kind))
    return items


def build(cache: Path = CACHE) -> dict[str, LabelledSet]:
    """Both sets, generated once into the cache and read back from it afterwards."""
    root = cache / f"labelled-{cache_key()}"
    manifest = root / "manifest.json"
    if not manifest.exists():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        rows = {
            name: [
                {**asdict(i), "path": str(i.path.relative_to(tmp))}
                for i in _generate(name, tmp / name)
            ]
            for name in ("calibration", "evaluation")
        }
        (tmp / "manifest.json").write_text(json.dumps(rows, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        for stale in cache.glob("labelled-*"):  # made by an earlier version of the code
            if stale != root:
                shutil.rmtree(stale, ignore_errors=True)
    rows = json.loads(manifest.read_text())
    return {
        name: LabelledSet(name, [Item(**{**r, "path": root / r["path"]}) for r in entries])
        for name, entries in rows.items()
    }


def main() -> None:
    sets = build()
    for labelled in sets.values():
        print(labelled.describe())
        families = Counter(i.family for i in labelled.items)
        print("  " + "  ".join(f"{f}={n}" for f, n in sorted(families.items())))
    print(f"files under {next(iter(sets.values())).items[0].path.parent.parent}")


if __name__ == "__main__":
    main()
