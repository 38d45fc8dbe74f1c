"""Catalogue index: latency, recall@10 against exact search, and the cost of adding a batch.

    .venv/bin/python bench/catalog.py [--dim 291] [--sizes 10000 100000 1000000]

About two minutes and 4.3 GB peak on the 2-core development machine. For each catalogue
size, in a fresh process (so its peak RSS is its own):

* ``VectorIndex`` (exact below ``EXACT_LIMIT``, IVF-Flat above) at several ``nprobe``:
  build time; recall@10 of 1,000 held-out queries against exact search (``faiss.knn``,
  the brute-force inner-product kernel of ``IndexFlatIP``, on the same vectors); recall of
  the exact top-10 entries with cosine >= 0.80 (product matches, what the catalogue is
  searched for); ms per query in a batch of 1,000 (all threads) and one query at a time
  (median, one thread: waking OpenMP threads costs more than a small search);
* the rejected alternative, faiss HNSW32, up to 100k (its build would not fit the time
  budget at 1M on two cores), at several ``efSearch``; at 100k also built in 1,000-row
  batches (the incremental path) against at once (a backfill);
* ``HashIndex``: adding, building the bucket tables, searching at radius 4 and 7;
* at the largest size: adding a 1,000-image batch versus rebuilding from history, and
  whether the two answer the same (they should: same training rows, same order);
* at 100k: removing five early batches versus rebuilding from the remaining rows (the
  one case where the quantisers differ): top-1 agreement and recall.

Then 100k again on harder data (weaker structure), for both indexes.

Synthetic data (``synthetic``): photos with 1-8 near-duplicate copies and two photos per
product, as in ``bench/clustering.py``; unlike there, products belong to categories and
every vector shares a common component (the ``local`` embedder's histograms are all
non-negative). Per product: 0.8 common + 0.6 category + 1.0 own direction (standard
normal vectors), plus 0.35 per photo and 0.15 per copy. With no structure at all (the
clustering bench's data) the 10th neighbour is noise at cosine ~0.25 and neither index
finds it without a near-full scan (measured at 100k: IVF nprobe 64 0.66, HNSW32
efSearch 128 0.73); the near-duplicates are found either way.
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
QUERIES = 1_000
BATCH = 1_000
K = 10
CLOSE = 0.80  # photogroup.catalog.SIMILAR_COSINE
EASY = {"categories": 256, "category_weight": 0.6}
HARD = {"categories": 1_000, "category_weight": 0.5}


def synthetic(
    n: int, dim: int, seed: int = 0, categories: int = 256, category_weight: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors and their dihedral pHashes (``n x 8`` uint64), in photo order."""
    rng = np.random.default_rng(seed)
    copies = np.minimum(rng.geometric(0.45, size=n), 8)
    photo = np.repeat(np.arange(len(copies)), copies)[:n]
    n_photos = int(photo.max()) + 1
    product = photo // 2  # two photos (viewpoints) per product
    n_products = int(product.max()) + 1
    common = rng.standard_normal(dim, dtype=np.float32)
    kinds = rng.standard_normal((categories, dim), dtype=np.float32)
    centres = 0.8 * common + category_weight * kinds[rng.integers(categories, size=n_products)]
    centres += rng.standard_normal((n_products, dim), dtype=np.float32)
    # In place, float32: at 1M x 291 each full array is 1.2 GB.
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb *= 0.15  # copy noise
    emb += centres[product]
    del centres
    offsets = rng.standard_normal((n_photos, dim), dtype=np.float32)
    offsets *= 0.35  # photo (viewpoint) offset
    emb += offsets[photo]
    del offsets
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    base = rng.integers(0, 2**63, size=(n_photos, 8), dtype=np.uint64)
    flips = np.zeros((n, 8), dtype=np.uint64)
    for _ in range(3):  # up to three flipped bits per hash, as bench/clustering.py
        flips |= np.uint64(1) << rng.integers(0, 64, size=(n, 8), dtype=np.uint64)
    return emb, base[photo] ^ flips


def split(n: int, dim: int, data: dict, extra: int = 0):
    """Catalogue (n), held-out queries (random rows) and ``extra`` rows for a new batch."""
    emb, d4 = synthetic(n + QUERIES + extra, dim, **data)
    rng = np.random.default_rng(1)
    role = np.zeros(len(emb), dtype=np.int8)
    role[rng.choice(len(emb), QUERIES + extra, replace=False)] = 1
    held = np.flatnonzero(role)
    role[held[QUERIES:]] = 2  # the extra batch: random held-out rows, not the queries
    pick = [np.flatnonzero(role == r) for r in range(3)]
    return [(emb[p], d4[p]) for p in pick]


def exact_top(base: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    return faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def close_recall(found: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray) -> float:
    """Share of the exact top-10 with cosine >= 0.80 (a product match) that was found."""
    close = truth_scores >= CLOSE
    hits = sum(
        len(set(f.tolist()) & set(t[c].tolist()))
        for f, t, c in zip(found, truth, close, strict=True)
    )
    return hits / max(1, int(close.sum()))


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def latency(search, queries: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Results of a batch search, ms per query in the batch, median ms of single queries."""
    import faiss

    found, seconds = timed(search, queries)
    # One query on one thread, as a service answering concurrent requests would: waking
    # OpenMP threads costs more than a small search on a shared two-core machine.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        single = [timed(search, q[None, :])[1] for q in queries[:200]]
    finally:
        faiss.omp_set_num_threads(threads)
    return found, 1000 * seconds / len(queries), 1000 * float(np.median(single))


def scores(ids: np.ndarray, truth: tuple[np.ndarray, np.ndarray]) -> dict:
    return {"recall": recall(ids, truth[1]), "close": close_recall(ids, truth[1], truth[0])}


def run_vector_index(index, base, queries, truth, nprobes) -> dict:
    _, build = timed(index.add, np.arange(len(base), dtype=np.int64), base)
    rows = []
    for nprobe in nprobes if not index.exact else [None]:
        (_, ids), batch_ms, single_ms = latency(
            lambda x, p=nprobe: index.search(x, K, nprobe=p), queries
        )
        rows.append({"nprobe": nprobe, **scores(ids, truth), "batch_ms": batch_ms,
                     "single_ms": single_ms})  # fmt: skip
    kind = "exact" if index.exact else f"IVF-Flat, nlist {index.nlist}"
    return {"index": kind, "build_s": build, "rows": rows, "default_nprobe": index.nprobe}


def run_hnsw(base, queries, truth, efs, batched: bool, m: int = 32) -> dict:
    import faiss

    def build(step: int):
        index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        for start in range(0, len(base), step):
            index.add(base[start : start + step])
        return index

    index, build_s = timed(build, len(base))
    out = {}
    if batched:  # the incremental path: is the graph the one a backfill builds?
        params = faiss.SearchParametersHNSW(efSearch=efs[0])
        _, one = index.search(queries, K, params=params)
        _, many = build(BATCH).search(queries, K, params=params)
        out["batched_top10_differ"] = float(np.mean((one != many).any(axis=1)))
        out["batched_top1_differ"] = float(np.mean(one[:, 0] != many[:, 0]))
    rows = []
    for ef in efs:
        params = faiss.SearchParametersHNSW(efSearch=ef)
        (_, ids), batch_ms, single_ms = latency(
            lambda x, p=params: index.search(x, K, params=p), queries
        )
        rows.append({"ef": ef, **scores(ids, truth), "batch_ms": batch_ms,
                     "single_ms": single_ms})  # fmt: skip
    return {"index": f"HNSW{m} (efConstruction 40)", "build_s": build_s, "rows": rows, **out}


def run_hashes(base_d4, query_d4, batch_d4) -> dict:
    from photogroup.catalog_index import HashIndex

    index = HashIndex()
    _, add_s = timed(index.add, np.arange(len(base_d4), dtype=np.int64), base_d4)
    _, tables_s = timed(index.search, query_d4[:1], 0)  # the first search builds the tables
    out = {"add_s": add_s, "tables_s": tables_s}
    for radius in (4, 7):
        (rows, _, _), seconds = timed(index.search, query_d4, radius)
        out[f"r{radius}_ms"] = 1000 * seconds / len(query_d4)
        out[f"r{radius}_found"] = len(rows)
    if len(batch_d4):
        ids = np.arange(len(base_d4), len(base_d4) + len(batch_d4), dtype=np.int64)
        _, out["batch_add_s"] = timed(index.add, ids, batch_d4)
        _, out["batch_tables_s"] = timed(index.search, query_d4[:1], 0)
    return out


def run_growth(index, base, batch, queries) -> dict:
    """Add one batch to the full index versus rebuild everything from scratch."""
    from photogroup.catalog_index import VectorIndex

    ids = np.arange(len(base), len(base) + len(batch), dtype=np.int64)
    _, add_s = timed(index.add, ids, batch)

    def rebuild():
        fresh = VectorIndex(base.shape[1])
        fresh.add(np.arange(len(base), dtype=np.int64), base)
        fresh.add(ids, batch)  # the backfill path: history in arrival order
        return fresh

    fresh, rebuild_s = timed(rebuild)
    a_scores, a_ids = index.search(queries, K)
    b_scores, b_ids = fresh.search(queries, K)
    return {
        "n": len(base),
        "add_s": add_s,
        "rebuild_s": rebuild_s,
        "identical": bool(np.array_equal(a_ids, b_ids) and np.array_equal(a_scores, b_scores)),
        "top1_same": float(np.mean(a_ids[:, 0] == b_ids[:, 0])),
    }


def run_removal(base, queries) -> dict:
    """Remove five early batches (rows the quantiser was trained on), compare with a
    rebuild from the remaining rows in the same order."""
    from photogroup.catalog_index import VectorIndex

    ids = np.arange(len(base), dtype=np.int64)
    gone = ids[: 5 * BATCH]
    index = VectorIndex(base.shape[1])
    index.add(ids, base)
    _, remove_s = timed(index.remove, gone)
    fresh = VectorIndex(base.shape[1])
    fresh.add(ids[5 * BATCH :], base[5 * BATCH :])
    _, a_ids = index.search(queries, K)
    _, b_ids = fresh.search(queries, K)
    truth = exact_top(base[5 * BATCH :], queries)[1] + 5 * BATCH
    return {
        "remove_s": remove_s,
        "top1_same": float(np.mean(a_ids[:, 0] == b_ids[:, 0])),
        "recall_removed": recall(a_ids, truth),
        "recall_rebuilt": recall(b_ids, truth),
        "returns_removed": bool(np.isin(a_ids, gone).any()),
    }


def run_one(n: int, dim: int, data: dict, largest: bool, removal: bool, hnsw: bool) -> dict:
    from photogroup.catalog_index import VectorIndex

    (base, base_d4), (queries, query_d4), (batch, batch_d4) = split(
        n, dim, data, BATCH if largest else 0
    )
    truth = exact_top(base, queries)
    index = VectorIndex(dim)
    out = {
        "n": n,
        "exact_cos_1": float(truth[0][:, 0].mean()),
        "exact_cos_10": float(truth[0][:, -1].mean()),
        "close_per_query": float((truth[0] >= CLOSE).sum(axis=1).mean()),
        "vector": run_vector_index(index, base, queries, truth, [8, 16, 32, 64]),
    }
    if hnsw:
        out["hnsw"] = run_hnsw(base, queries, truth, [64, 128, 256], batched=removal)
    out["hashes"] = run_hashes(base_d4, query_d4, batch_d4)
    if largest and not index.exact:
        out["growth"] = run_growth(index, base, batch, queries)
    del index
    if removal:
        out["removal"] = run_removal(base, queries)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def show(r: dict) -> None:
    v = r["vector"]
    print(
        f"\n{r['n']:,} vectors: exact 1st / 10th neighbour cosine {r['exact_cos_1']:.3f} / "
        f"{r['exact_cos_10']:.3f}, {r['close_per_query']:.1f} of the 10 at >= {CLOSE}; "
        f"peak RSS {r['peak_rss_mb']:,.0f} MB"
    )
    header = "recall@10  cos>=0.8   ms/query (batch of 1,000)   ms (single query, 1 thread)"
    print(f"  chosen: VectorIndex ({v['index']}), build {v['build_s']:.2f} s")
    print(f"    {'':<12} {header}")
    for row in v["rows"]:
        name = "exact" if row["nprobe"] is None else f"nprobe {row['nprobe']}"
        mark = "  <- default" if row["nprobe"] == v["default_nprobe"] else ""
        print(f"    {name:<12} {_cells(row)}{mark}")
    if "hnsw" in r:
        h = r["hnsw"]
        print(f"  rejected: {h['index']}, build {h['build_s']:.2f} s")
        for row in h["rows"]:
            print(f"    {'efSearch ' + str(row['ef']):<12} {_cells(row)}")
        if "batched_top1_differ" in h:
            print(
                f"    built in {BATCH:,}-row batches vs at once: top-10 differs for "
                f"{100 * h['batched_top10_differ']:.1f}% of queries, "
                f"top-1 for {100 * h['batched_top1_differ']:.1f}%"
            )
    hs = r["hashes"]
    print(
        f"  HashIndex: add {hs['add_s']:.3f} s, tables {hs['tables_s']:.2f} s; search "
        f"r=4 {hs['r4_ms']:.3f} ms/query ({hs['r4_found']:,} hits), "
        f"r=7 {hs['r7_ms']:.3f} ms/query ({hs['r7_found']:,} hits)"
    )
    if "batch_add_s" in hs:
        print(
            f"  HashIndex: add a {BATCH:,}-image batch {1000 * hs['batch_add_s']:.1f} ms, "
            f"tables rebuilt on the next search {hs['batch_tables_s']:.2f} s"
        )
    if "growth" in r:
        g = r["growth"]
        ratio = g["rebuild_s"] / g["add_s"]
        print(
            f"  add a {BATCH:,}-image batch to {g['n']:,}: {1000 * g['add_s']:.1f} ms; "
            f"rebuild from scratch: {g['rebuild_s']:.1f} s; rebuild / add = {ratio:,.0f}x"
        )
        print(
            f"  incremental vs rebuilt from history: identical results {g['identical']}, "
            f"top-1 same for {100 * g['top1_same']:.1f}% of queries"
        )
    if "removal" in r:
        m = r["removal"]
        print(
            f"  remove 5 early batches: {1000 * m['remove_s']:.1f} ms; vs rebuilt from the "
            f"rest: top-1 same {100 * m['top1_same']:.1f}%, recall@10 "
            f"{m['recall_removed']:.4f} vs {m['recall_rebuilt']:.4f}; "
            f"removed ids returned: {m['returns_removed']}"
        )


def _cells(row: dict) -> str:
    return (
        f"{row['recall']:.4f}     {row['close']:.4f}     {row['batch_ms']:7.3f}"
        f"                     {row['single_ms']:7.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=291, help="the local embedder's dimension")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(dim=args.dim, **json.loads(args.one))))
        return
    started = time.perf_counter()
    import faiss

    print(f"dim {args.dim}, {QUERIES:,} held-out queries, k={K}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")  # fmt: skip
    jobs = [
        {"n": n, "data": EASY, "largest": n == max(args.sizes), "removal": n == 100_000,
         "hnsw": n <= 100_000}
        for n in args.sizes
    ]  # fmt: skip
    if 100_000 in args.sizes:
        jobs.append({"n": 100_000, "data": HARD, "largest": False, "removal": False, "hnsw": True})
    for job in jobs:
        out = subprocess.run(
            [sys.executable, __file__, "--dim", str(args.dim), "--one", json.dumps(job)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        if job["data"] is HARD:
            print(f"\nHarder data ({HARD['categories']:,} categories, weight "
                  f"{HARD['category_weight']}: less structure):", end="")  # fmt: skip
        show(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
