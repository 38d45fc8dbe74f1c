"""How high product F1 can go on the rendered sets for a grouping that never guesses.

A base product's view can show only panels its variants share: an artwork variant's back
and sides, a cylinder's back label for a flavour variant (fine print, nutrition table and
barcode). Rendered again with each variant's design from the same camera, on the same
backdrop, such a view differs in (almost) no pixel of the product: nothing in the photo
says which product of the line it shows. The sets shoot variants from the front only, so
the label says "the base"; a shop's batch may as well hold the variant's back. This script
counts those views and scores the labels with them set apart (all such views of one base
product together, with their edited copies), every other image in its true product: the
product P / R / F1 of a grouping that gets every decidable photo right and does not guess.

    .venv/bin/python bench/product_ceiling.py [SET ...] [--share 0.01]

A view counts as undecidable when under ``--share`` of the product's pixels differ by more
than 24 of 255 in some channel from one of its line's variants at the same camera. Labels
only: nothing here is a choice of the grouping, so any set may be read.
"""

from __future__ import annotations

import argparse
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import grouping_sets
import labelled_set
import numpy as np
import product_set
import render_products as rp

from photogroup import pairwise_scores

#: A channel differing by more than this (of 255) is a pixel that differs.
PIXEL_STEP = 24


def set_sources() -> dict[str, tuple[int, tuple[str, ...]]]:
    """Every rendered set: name -> (seed, source photos)."""
    out = {name: (p.seed, p.sources) for name, p in product_set.PRESETS.items()}
    for name, seed in grouping_sets.CALIBRATION_SEEDS:
        out[name] = (seed, labelled_set.CALIBRATION_PHOTOS)
    for name, seed, sources in grouping_sets.HOLDOUTS:
        out[name] = (seed, sources)
    return out


def _draw(shot, product: rp.Product) -> rp.Rendered:
    """``product`` in ``shot``'s place: same camera, backdrop and shadow."""
    rng = np.random.default_rng(shot.backdrop_seed)
    return rp.render(product, shot.view, shot.background, shadow=shot.shadow, rng=rng,
                     backdrop=shot.backdrop)  # fmt: skip


def differing_share(shown: rp.Rendered, other: rp.Rendered) -> float:
    """Share of the product's pixels in ``shown`` that change in ``other`` (a variant of
    the line drawn in its place)."""
    inside = shown.mask > 0.5
    if not inside.any():
        return 1.0
    step = np.abs(np.asarray(shown.image, np.int16) - np.asarray(other.image, np.int16))
    return float((step.max(axis=2)[inside] > PIXEL_STEP).mean())


def _line(shots) -> list[tuple[str, str, float]]:
    """(photo, variant kind, differing share) for each base view and variant of one line;
    each base view is drawn once."""
    variants = {s.product.name: (s.product, s.product.name.split("-")[-2]) for s in shots
                if s.kind == "variant"}  # fmt: skip
    rows = []
    for s in shots:
        if s.kind != "view" or not variants:
            continue
        shown = _draw(s, s.product)
        rows += [(s.photo, kind, differing_share(shown, _draw(s, v)))
                 for v, kind in variants.values()]  # fmt: skip
    return rows


def undecidable(seed: int, sources: tuple[str, ...], share: float = 0.01):
    """The base views of a set (by seed and sources) no pixel tells from a variant of their
    line, the (view, variant) pairs that look alike per variant kind (a view can match two
    variants), and how many base views there are."""
    plan = product_set._plan(seed, sources)  # the shots the set was rendered from
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = [r for line in pool.map(_line, plan) for r in line]
    photos = {photo for photo, _, s in rows if s < share}
    by_kind = Counter(kind for photo, kind, s in rows if s < share)
    views = sum(s.kind == "view" for line in plan for s in line)
    return photos, by_kind, views


def ceiling(name: str, seed: int, sources: tuple[str, ...], share: float) -> dict:
    photos, by_kind, views = undecidable(seed, sources, share)
    items = product_set.build(name, seed, sources).items
    truth = [i.product for i in items]
    apart = [i.product + ("/undecidable" if i.photo in photos else "") for i in items]
    return {"views": views, "undecidable": len(photos), "by_kind": dict(by_kind),
            "scores": pairwise_scores(truth, apart)}  # fmt: skip


def main() -> None:
    sets = set_sources()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", default=list(sets))
    parser.add_argument("--share", type=float, default=0.01)
    args = parser.parse_args()
    print(f"{'set':13s} {'base views':>10s} {'undecidable':>11s}  alike pairs by kind"
          f"{'':9s} ceiling P / R / F1")  # fmt: skip
    for name in args.sets:
        seed, sources = sets[name]
        r = ceiling(name, seed, sources, args.share)
        s = r["scores"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["by_kind"].items()))
        print(f"{name:13s} {r['views']:10d} {r['undecidable']:11d}  {kinds:28s} "
              f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
