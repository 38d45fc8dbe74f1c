"""Labelled sets of rendered product photos: views, variants and shop edits.

Each set has about 12 base products (half boxes, half cylinders) from
:mod:`render_products`, each photographed from 4-6 views on one backdrop; 1-2 variants per
base (another SKU: colour, flavour or artwork changed, kinds spread evenly over the set),
each from 2-3 views close to some of the base's views (the hard negatives); and for about
2/3 of all rendered views 1-2 near-duplicate copies, families taken round-robin over
:data:`shop_edits.FAMILIES` and :data:`transforms.FAMILIES`. Labels:

* ``photo`` (strict): one rendered view; its edited copies share it;
* ``product``: all views of one product (a variant is another product);
* ``base``: the base product of the line, shared by its variants (variant pairs: same
  ``base``, different ``product``);
* ``family``: ``original`` or the edit family; ``kind``: ``view`` (a base product's view) or
  ``variant`` (a variant's view); an edited copy keeps its source's kind.

The three presets are disjoint by seed, by product (generated from the seed) and by source
photo (printed illustrations and blurred backdrops). Files are JPEG (quality 92) with each
original's coverage mask beside it (``<stem>.mask.png``), under
``bench/.cache/products-<name>-<key>/``; the key hashes the code and the seed.

    .venv/bin/python bench/product_set.py [calibration|evaluation|fresh ...]
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import PIL
from PIL import Image

try:  # imported as bench.product_set
    from bench import labelled_set, photos, shop_edits, transforms
    from bench import render_products as rp
except ImportError:  # run as a script, bench/ on sys.path
    import labelled_set  # type: ignore[no-redef]
    import photos  # type: ignore[no-redef]
    import render_products as rp  # type: ignore[no-redef]
    import shop_edits  # type: ignore[no-redef]
    import transforms  # type: ignore[no-redef]

CACHE = labelled_set.CACHE  # bench/.cache: one folder for every generated set
JPEG_QUALITY = 92
BASE_PRODUCTS = 12
MIN_PER_FAMILY = 6
#: Edit families in round-robin order: the shop edits first, then transforms.py's.
EDIT_FAMILIES: dict[str, transforms.Transform] = {**shop_edits.FAMILIES, **transforms.FAMILIES}


@dataclass(frozen=True)
class Preset:
    seed: int
    sources: tuple[str, ...]  # photos for printed illustrations and blurred backdrops


#: Calibration and evaluation use the same photos as labelled_set.py's sets of the same
#: name (so the whole calibration batch and the whole evaluation batch share no source);
#: "fresh" uses the grey textures and coffee (in neither) and a third seed.
PRESETS: dict[str, Preset] = {
    "calibration": Preset(101, labelled_set.CALIBRATION_PHOTOS),
    "evaluation": Preset(202, labelled_set.EVALUATION_PHOTOS),
    "fresh": Preset(303, (*photos.TEXTURES, "skimage:coffee")),
}


@dataclass(frozen=True)
class Item(labelled_set.Item):
    """A labelled_set item (``kind``: "view" or "variant"; edited copies keep their
    source's) with the product line and the mask of an original."""

    base: str  # the base product of the line
    mask: str = ""  # coverage mask PNG of an original, "" for edits


@dataclass(frozen=True)
class ProductSet:
    name: str
    items: list[Item]
    folder: Path = field(default=Path())

    def variant_pairs(self) -> int:
        """Image pairs of one product line that show different products."""
        return sum(
            a.base == b.base and a.product != b.product for a, b in combinations(self.items, 2)
        )

    def describe(self) -> str:
        originals = [i for i in self.items if i.family == "original"]
        kinds = Counter(i.kind for i in originals)
        families = Counter(i.family for i in self.items)
        return "\n".join(
            [
                f"{self.name}: {len(self.items)} items, {len(originals)} rendered views "
                f"({kinds['view']} of {len({i.base for i in self.items})} base products, "
                f"{kinds['variant']} of variants), {len({i.product for i in self.items})} "
                f"products, {self.variant_pairs()} variant pairs",
                "  families: " + "  ".join(f"{f}={n}" for f, n in sorted(families.items())),
                f"  folder: {self.folder}",
            ]
        )


@dataclass(frozen=True)
class _Shot:
    """One rendered view to make, with the edits of it."""

    photo: str
    product: rp.Product
    kind: str
    base: str
    view: rp.View
    background: str
    backdrop: str | None
    shadow: bool
    backdrop_seed: tuple[int, ...]
    families: tuple[str, ...] = ()
    edit_seed: tuple[int, ...] = ()


def _near(view: rp.View, rng: np.random.Generator) -> rp.View:
    """A view a few degrees from ``view``: a variant shot at the base's angle."""
    return replace(
        view,
        azimuth_deg=view.azimuth_deg + float(rng.uniform(-8, 8)),
        elevation_deg=float(np.clip(view.elevation_deg + rng.uniform(-4, 4), 5, 30)),
        distance=view.distance * float(rng.uniform(0.95, 1.05)),
        spin_deg=view.spin_deg + float(rng.uniform(-6, 6)),
        roll_deg=float(rng.uniform(-3, 3)),
    )


def _facing_front(view: rp.View, within: float = 70.0) -> bool:
    """Whether the camera sees the product's front: azimuth relative to the product's turn."""
    relative = (view.azimuth_deg - view.spin_deg + 180.0) % 360.0 - 180.0
    return abs(relative) <= within


def _plan(seed: int, sources: tuple[str, ...]) -> list[list[_Shot]]:
    """Every shot of the set, grouped by base product; edit families assigned round-robin."""
    rng = np.random.default_rng([seed, 0])
    backgrounds = [b for b in rp.BACKGROUNDS if sources or b != "blurred_photo"]
    order = rng.permutation(len(backgrounds))
    kinds = rp.VARIANT_KINDS
    n_variants = 0
    jobs: list[list[_Shot]] = []
    for i in range(BASE_PRODUCTS):
        shape = "box" if i % 2 == 0 else "cylinder"
        base = rp.make_product(seed * 1000 + i, shape, sources)
        background = backgrounds[order[i % len(backgrounds)]]
        backdrop = sources[int(rng.integers(len(sources)))] if sources else None
        common = {
            "base": base.name,
            "background": background,
            "backdrop": backdrop,
            "backdrop_seed": (seed, i, 5),
        }
        views = rp.view_sequence(rng, int(rng.integers(4, 7)), shape)
        shots = [
            _Shot(
                f"{base.name}/v{k}",
                base,
                "view",
                view=v,
                shadow=bool(rng.random() < 0.85),
                **common,
            )
            for k, v in enumerate(views)
        ]
        for _ in range(int(rng.integers(1, 3))):
            kind = kinds[n_variants % len(kinds)]
            n_variants += 1
            variant = rp.make_variant(base, kind, rng, sources)
            # A shop photographs a variant where it differs: its front (the camera within 70
            # degrees of it). From the back, an artwork variant is its base's exact twin.
            front = [k for k, v in enumerate(views) if _facing_front(v)]
            size = min(len(front), int(rng.integers(2, 4)))
            picked = rng.choice(front, size=size, replace=False)
            shots += [
                _Shot(
                    f"{variant.name}/v{k}",
                    variant,
                    "variant",
                    view=_near(views[int(j)], rng),
                    shadow=shots[int(j)].shadow,
                    **common,
                )
                for k, j in enumerate(picked)
            ]
        jobs.append(shots)
    return _assign_edits(jobs, rng, seed)


def _assign_edits(jobs: list[list[_Shot]], rng: np.random.Generator, seed: int):
    """1-2 edited copies for about 2/3 of the shots (more if needed so that every family
    gets ``MIN_PER_FAMILY`` copies), families round-robin in set order."""
    flat = [(j, k) for j, shots in enumerate(jobs) for k in range(len(shots))]
    total = max(MIN_PER_FAMILY * len(EDIT_FAMILIES), round(len(flat) * 2 / 3 * 1.5))
    n_edited = min(len(flat), max(math.ceil(len(flat) * 2 / 3), math.ceil(total / 2)))
    chosen = sorted(rng.permutation(len(flat))[:n_edited].tolist())
    copies = dict.fromkeys(chosen, 1)
    for index in rng.permutation(chosen)[: max(0, total - n_edited)]:
        copies[int(index)] = 2
    names = list(EDIT_FAMILIES)
    position = 0
    out = [list(shots) for shots in jobs]
    for index in chosen:
        j, k = flat[index]
        fams = tuple(names[(position + c) % len(names)] for c in range(copies[index]))
        position += copies[index]
        out[j][k] = replace(out[j][k], families=fams, edit_seed=(seed, j, k, 9))
    return out


def _stem(photo: str) -> str:
    return photo.replace("/", "__")


def _edit(img: Image.Image, family: str, rng: np.random.Generator) -> tuple[str, Image.Image]:
    """``family``'s edit, or the next family's when it changes nothing (a grey image's
    grayscale or desaturation)."""
    names = list(EDIT_FAMILIES)
    original = np.asarray(img)
    for step in range(len(names)):
        name = names[(names.index(family) + step) % len(names)]
        edited = EDIT_FAMILIES[name](img, rng)
        if edited.size != img.size or not np.array_equal(np.asarray(edited), original):
            return name, edited
    raise AssertionError("no edit changes the image")


def _make(args: tuple[list[_Shot], str]) -> tuple[str, list[dict]]:
    """Render, edit and save one base product's shots; manifest rows (paths relative)."""
    shots, folder = args
    root = Path(folder)
    rows = []
    for shot in shots:
        rendered = rp.render(
            shot.product,
            shot.view,
            shot.background,
            shadow=shot.shadow,
            rng=np.random.default_rng(shot.backdrop_seed),
            backdrop=shot.backdrop,
        )
        stem = _stem(shot.photo)
        path = root / f"{stem}__00_original.jpg"
        mask = root / f"{stem}.mask.png"
        rendered.image.save(path, format="JPEG", quality=JPEG_QUALITY)
        alpha = np.clip(rendered.mask * 255 + 0.5, 0, 255).astype(np.uint8)
        cv2.imwrite(str(mask), alpha)
        labels = {
            "photo": shot.photo,
            "product": shot.product.name,
            "kind": shot.kind,
            "base": shot.base,
        }
        rows.append({"path": path.name, "family": "original", "mask": mask.name, **labels})
        rng = np.random.default_rng(shot.edit_seed)
        for c, family in enumerate(shot.families, start=1):
            name, edited = _edit(rendered.image, family, rng)
            path = root / f"{stem}__{c:02d}_{name}.jpg"
            edited.convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY)
            rows.append({"path": path.name, "family": name, "mask": "", **labels})
    return shots[0].base, rows


def cache_key(seed: int, sources: tuple[str, ...]) -> str:
    """Hash of the code, libraries and parameters that decide the files' bytes."""
    digest = hashlib.sha256()
    for source in (rp.__file__, shop_edits.__file__, __file__, transforms.__file__):
        digest.update(Path(source).read_bytes())
    versions = f"{PIL.__version__}/{np.__version__}/{cv2.__version__}"
    digest.update(f"{seed}/{sources}/{JPEG_QUALITY}/{versions}".encode())
    return digest.hexdigest()[:12]


def _load(name: str, root: Path) -> ProductSet:
    rows = json.loads((root / "manifest.json").read_text())
    items = [
        Item(**{**r, "path": root / r["path"], "mask": str(root / r["mask"]) if r["mask"] else ""})
        for r in rows
    ]
    return ProductSet(name, items, root)


def build(
    name: str, seed: int, sources: tuple[str, ...], cache: Path = CACHE, processes: int = 2
) -> ProductSet:
    """The set, rendered once into the cache and read back from it afterwards. Each build
    writes into its own temporary folder, renamed into place when complete, so concurrent
    builds of one set never see or clobber each other's files."""
    root = cache / f"products-{name}-{cache_key(seed, sources)}"
    if (root / "manifest.json").exists():
        return _load(name, root)
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "product_set.build() ran while a spawned process imported its parent's main "
            "module: guard the calling script with `if __name__ == '__main__':`"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=cache))
    jobs = [(shots, str(tmp)) for shots in _plan(seed, sources)]
    start = time.perf_counter()
    rows: list[dict] = []
    # fork where available: workers inherit the plan and never re-import the caller's script
    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else None)
    with context.Pool(processes) as pool:
        for done, (base, made) in enumerate(pool.imap(_make, jobs), start=1):
            rows += made
            elapsed = time.perf_counter() - start
            print(f"  {name} {done}/{len(jobs)} {base}: {len(made)} files, {elapsed:.0f} s")
    (tmp / "manifest.json").write_text(json.dumps(rows, indent=1))
    if root.exists() and not (root / "manifest.json").exists():
        shutil.rmtree(root, ignore_errors=True)  # left by a crash
    try:
        tmp.rename(root)
    except OSError:  # another build of the same set finished first: keep its files
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in cache.glob(f"products-{name}-*"):  # made by an earlier version of the code
        if not stale.name.startswith(root.name):
            shutil.rmtree(stale, ignore_errors=True)
    return _load(name, root)


def build_preset(name: str, **kwargs) -> ProductSet:
    preset = PRESETS[name]
    return build(name, preset.seed, preset.sources, **kwargs)


def main() -> None:
    for name in sys.argv[1:] or list(PRESETS):
        start = time.perf_counter()
        built = build_preset(name)
        print(built.describe())
        print(f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
