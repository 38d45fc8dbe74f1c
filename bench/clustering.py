"""Clustering time and peak memory at 1k, 10k, 100k and 1M images (synthetic features).

Synthetic batches look like real ones: photos with 1-8 near-duplicate copies (each copy's
eight dihedral hashes a few bits from the photo's, its embedding a small step from the
photo's), photos grouped into products, plus unrelated singletons. Geometric verification
needs pixels, so it is off here; everything else in ``group_images`` runs. Each size runs in
a fresh process so its peak RSS is its own.

    .venv/bin/python bench/clustering.py [--sizes 1000 10000 100000 1000000] [--dim 1280]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def synthetic(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    copies = np.minimum(rng.geometric(0.45, size=n), 8)
    photo = np.repeat(np.arange(len(copies)), copies)[:n]
    n_photos = int(photo.max()) + 1
    base = rng.integers(0, 2**63, size=(n_photos, 8), dtype=np.uint64)
    flips = np.zeros((n, 8), dtype=np.uint64)
    for _ in range(3):  # up to three flipped bits per hash
        flips |= np.uint64(1) << rng.integers(0, 64, size=(n, 8), dtype=np.uint64)
    d4 = base[photo] ^ flips
    product = photo // 2  # two photos (viewpoints) per product
    centres = rng.standard_normal((int(product.max()) + 1, dim)).astype(np.float32)
    photo_offsets = rng.standard_normal((n_photos, dim)).astype(np.float32) * 0.35
    emb = centres[product] + photo_offsets[photo]
    emb += rng.standard_normal((n, dim)).astype(np.float32) * 0.15
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"{i:016x}" + "0" * 48 for i in range(n)]  # group ids take 16 hex digits
    return ids, d4, emb, photo


def run_one(n: int, dim: int) -> dict:
    from photogroup.cluster import GroupingParams, group_arrays

    ids, d4, emb, photo = synthetic(n, dim)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    grouping = group_arrays(ids, d4, emb, GroupingParams())
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from photogroup.evaluate import pairwise_scores

    groups = {a.image_id: a.group_id for a in grouping.assignments}
    predicted = [groups[i] for i in ids]
    quality = pairwise_scores(photo.tolist(), predicted) if n <= 100_000 else {}
    return {
        "n": n,
        "seconds": seconds,
        "peak_rss_mb": peak / 1024,
        "input_rss_mb": before / 1024,
        "links": len(grouping.group_links),
        "f1": quality.get("f1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.dim)))
        return
    results = {}
    print(f"embedding dimension {args.dim}; geometric verification off (no pixels)")
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results[n] = r
        f1 = f"  strict F1 vs truth {r['f1']:.3f}" if r["f1"] is not None else ""
        print(
            f"{n:>9,} images: {r['seconds']:7.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB "
            f"(input data {r['input_rss_mb']:.0f} MB)  links {r['links']:,}{f1}"
        )
    if 10_000 in results and 100_000 in results:
        ratio = results[100_000]["seconds"] / results[10_000]["seconds"]
        print(f"10k -> 100k time ratio: {ratio:.1f} (10x the images)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
