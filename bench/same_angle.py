"""Studio shots from one camera position: a product and its variants, and edited copies.

A shop shooting a product line on a tripod photographs each variant (another colour,
flavour or artwork: another product) from exactly where it shot the base. Such a pair
aligns on one exact plane and agrees block by block as an edited copy does; the labelled
sets of ``grouping.py`` render variants from other angles and so barely test it. Here each
base product is rendered from one random view on one backdrop, each of its three variants
from the same view, and the base's shot is edited as shops do (a sticker, a white-balance
shift, a tone change: brightness, contrast or gamma, and two kinds of edit pairs; two of
each). One batch per set is grouped, and printed:

* variant pairs (base-variant and variant-variant, one camera position) in one strict
  group, and in one product;
* copies in their original's strict group, per edit family.

Calibration renders the calibration photos (``labelled_set.CALIBRATION_PHOTOS``) under
seeds 50000-50029 and 60000-60029; evaluation renders the evaluation photos under seeds
70000-70029 and was never used for a choice; fresh (made after a rule was changed on
seeing evaluation's figures) draws its artwork without any photo, seeds 80000-80029.

    .venv/bin/python bench/same_angle.py [--products 30]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import labelled_set
import numpy as np
import render_products as rp
import shop_edits
import transforms

from photogroup import GroupingParams, LocalEmbedder, compute_features, decode_image
from photogroup.cluster import group_images
from photogroup.verify import Keypoints

EDITS = ("sticker", "colour_temperature", "shop_pair", "tone", "pair")
_EDIT = {**transforms.FAMILIES, **shop_edits.FAMILIES}
SETS = {
    "calibration": (labelled_set.CALIBRATION_PHOTOS, (50000, 60000)),
    "evaluation": (labelled_set.EVALUATION_PHOTOS, (70000,)),
    "fresh": ((), (80000,)),  # artwork drawn without any photo
}


@dataclass(frozen=True)
class Shot:
    data: bytes  # JPEG, quality 92
    photo: str  # strict label
    product: str
    line: str  # the base product: shared by its variants
    family: str  # "original", "variant" or the edit family


def _jpeg(img) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=92)
    return out.getvalue()


def line_of(seed: int, photos: tuple[str, ...]) -> list[Shot]:
    """One base product, its three variants from the same camera position, and edits."""
    rng = np.random.default_rng(seed)
    sources = tuple(str(s) for s in rng.choice(photos, 2, replace=False)) if photos else ()
    base = rp.make_product(seed, ("box", "cylinder")[seed % 2], sources)
    view = rp.View(azimuth_deg=float(rng.uniform(-40, 40)), elevation_deg=float(rng.uniform(0, 20)))
    backdrop = rp.BACKGROUNDS[seed % len(rp.BACKGROUNDS)]
    size = ((640, 480), (1024, 768))[(seed // 2) % 2]

    def shot(product: rp.Product):
        return rp.render(product, view, backdrop, size=size, rng=np.random.default_rng(seed)).image

    line = f"line{seed}"
    original = shot(base)
    shots = [Shot(_jpeg(original), line, line, line, "original")]
    for k, kind in enumerate(rp.VARIANT_KINDS):
        variant = rp.make_variant(base, kind, np.random.default_rng(seed + 1), sources)
        shots.append(Shot(_jpeg(shot(variant)), f"{line}-{k}", f"{line}-{k}", line, "variant"))
    for family, r in itertools.product(EDITS, range(2)):
        edited = _EDIT[family](original, np.random.default_rng(1000 * seed + r))
        shots.append(Shot(_jpeg(edited), line, line, line, family))
    return shots


def _prepared(shot: Shot) -> tuple:
    work = decode_image(shot.data).image
    features = compute_features(work)
    return work, features.phash_d4, Keypoints.from_base64(features.keypoints)


def score(shots: list[Shot], params: GroupingParams) -> dict:
    with ProcessPoolExecutor() as pool:
        prepared = list(pool.map(_prepared, shots, chunksize=8))
    works, hashes, keypoints = zip(*prepared, strict=True)
    # One id a shot: two edits can give the same bytes (the pipeline would keep one).
    ids = [hashlib.sha256(str(k).encode()).hexdigest() for k in range(len(shots))]
    assignments = group_images(ids, list(hashes), LocalEmbedder().embed(list(works)), params,
                               keypoints=list(keypoints))  # fmt: skip
    by_id = {a.image_id: a for a in assignments}
    placed = [by_id[i] for i in ids]
    out: dict = {"variant_pairs": 0, "strict_merged": 0, "product_merged": 0}
    copies: dict[str, list[bool]] = defaultdict(list)
    original_group = {s.line: p.group_id for s, p in zip(shots, placed, strict=True)
                      if s.family == "original"}  # fmt: skip
    for s, p in zip(shots, placed, strict=True):
        if s.family in EDITS:
            copies[s.family].append(p.group_id == original_group[s.line])
    unedited = [(s, p) for s, p in zip(shots, placed, strict=True)
                if s.family in ("original", "variant")]  # fmt: skip
    for (s, p), (t, q) in itertools.combinations(unedited, 2):
        if s.line == t.line:
            out["variant_pairs"] += 1
            out["strict_merged"] += p.group_id == q.group_id
            out["product_merged"] += p.product_id == q.product_id
    out["copies"] = {family: (sum(v), len(v)) for family, v in copies.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=30, help="base products per seed range")
    args = parser.parse_args()
    params = GroupingParams()
    for name, (photos, starts) in SETS.items():
        began = time.perf_counter()
        seeds = [start + k for start in starts for k in range(args.products)]
        shots = [s for seed in seeds for s in line_of(seed, photos)]
        r = score(shots, params)
        pairs = r["variant_pairs"]
        copies = ", ".join(f"{f} {ok}/{n}" for f, (ok, n) in r["copies"].items())
        print(f"{name}: {len(seeds)} lines, {len(shots)} images, "
              f"{time.perf_counter() - began:.0f} s\n"
              f"  variant pairs in one strict group {r['strict_merged']}/{pairs} "
              f"({r['strict_merged'] / pairs:.1%}), in one product {r['product_merged']}/{pairs} "
              f"({r['product_merged'] / pairs:.1%})\n"
              f"  copies in their original's strict group: {copies}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
