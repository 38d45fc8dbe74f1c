"""Grouping quality on a labelled set built from scikit-image's bundled photos.

Each photo gets every edit in photogroup.variants (strict label = the photo); the stereo
motorcycle pair shares a product label but not a photo label. Prints pairwise
precision/recall/F1 and ARI at both levels, plus distance margins.

    .venv/bin/python bench/grouping.py
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from photogroup import LocalEmbedder, compute_features, group_images, pairwise_scores
from photogroup.decode import decode_image, encode_work_image
from photogroup.samples import PHOTOS, load_photo, load_stereo_pair
from photogroup.variants import EDITS


def labelled_set():
    items = []  # (image, photo label, product label, edit name)
    for name in PHOTOS:
        original = load_photo(name)
        items.append((original, name, name, "original"))
        items.extend((edit(original), name, name, label) for label, edit in EDITS.items())
    left, right = load_stereo_pair()
    items += [(left, "moto-left", "moto", "viewpoint"), (right, "moto-right", "moto", "viewpoint")]
    return items


def main() -> None:
    items = labelled_set()
    t0 = time.perf_counter()
    works = [decode_image(encode_work_image(img)).image for img, *_ in items]
    feats = [compute_features(w) for w in works]
    t1 = time.perf_counter()
    emb = LocalEmbedder().embed(works)
    t2 = time.perf_counter()
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(items))]
    by_id = {a.image_id: a for a in group_images(ids, [f.phash_d4 for f in feats], emb)}
    result = [by_id[i] for i in ids]
    t3 = time.perf_counter()
    groups = [a.group_id for a in result]
    products = [a.product_id for a in result]
    strict = pairwise_scores([item[1] for item in items], groups)
    loose = pairwise_scores([item[2] for item in items], products)
    print(f"images: {len(items)}  groups: {len(set(groups))}  products: {len(set(products))}")
    print("strict  " + "  ".join(f"{k}={v:.3f}" for k, v in strict.items()))
    print("product " + "  ".join(f"{k}={v:.3f}" for k, v in loose.items()))
    n = len(items)
    print(
        f"ms/image: features {1000 * (t1 - t0) / n:.1f}  embed {1000 * (t2 - t1) / n:.1f}  "
        f"group {1000 * (t3 - t2) / n:.2f}"
    )
    originals = {item[1]: groups[i] for i, item in enumerate(items) if item[3] == "original"}
    recall = {}
    for i, (_, photo, _, edit) in enumerate(items):
        if edit not in ("original", "viewpoint"):
            recall.setdefault(edit, []).append(groups[i] == originals[photo])
    print("strict recall per edit: " + "  ".join(
        f"{edit}={sum(hits) / len(hits):.2f}" for edit, hits in recall.items()))  # fmt: skip
    _margins(items, feats, emb)


def _margins(items, feats, emb) -> None:
    from photogroup.features import hamming_d4

    same, diff = [], []
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            d = hamming_d4(feats[i].phash_d4[0], feats[j].phash_d4)
            c = float(emb[i] @ emb[j])
            (same if items[i][1] == items[j][1] else diff).append((d, c))
    same_d, same_c = np.array(same).T
    diff_d, diff_c = np.array(diff).T
    print(
        f"same photo: hash max {same_d.max():.0f} p90 {np.percentile(same_d, 90):.0f}; "
        f"cos min {same_c.min():.3f} p10 {np.percentile(same_c, 10):.3f}"
    )
    print(
        f"different:  hash min {diff_d.min():.0f} p1 {np.percentile(diff_d, 1):.0f}; "
        f"cos max {diff_c.max():.3f} p99 {np.percentile(diff_c, 99):.3f}"
    )


if __name__ == "__main__":
    main()
