"""Server-side time of the review app's batch page on a synthetic 2,000-photo batch.

Against a throwaway local S3 and Dagster instance: the batch's tables (image_clusters with
evidence, raw_images with rejections, product_images' 256 px renditions) are written as the
pipeline writes them, their materialisations reported to the instance, 20 edits recorded
through the shared edit path; then the app runs in this process (uvicorn on a free port)
and the page is requested cold (tables read from S3) and warm, every page of products, and
one edit's round trip. Times are the app's own ``Server-Timing`` (request in, first byte
out), measured in one run.

    .venv/bin/python bench/review_page.py [--images 2000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throwaway import throwaway_s3

TENANT, BATCH = "bench-shop", "big-batch"
COLOURS = ["red", "blue", "black", "white", "brown", "green", "grey", "yellow"]


def synthetic_tables(images: int, seed: int = 7):
    """image_clusters, raw_images and product_images of a batch of ``images`` photos:
    groups of 1-5 photos, products of 1-3 groups, a link per grouped photo, 2 % rejected."""
    import pandas as pd

    rng = random.Random(seed)
    rows, index, group_no, product_no = [], 0, 0, 0
    while index < images:
        product = f"p-{product_no:016x}"
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            size = min(rng.choice([1, 1, 2, 2, 3, 5]), images - index)
            if size == 0:
                break
            group, confidence = f"g-{group_no:016x}", round(rng.uniform(0.5, 1.0), 4)
            colour = rng.choice(COLOURS)
            shas = [f"{index + i:064x}" for i in range(size)]
            for i, sha in enumerate(shas):
                links = [{"a": sha, "b": shas[0], "rule": "same_photo", "inliers": 300,
                          "agreement": confidence}] if i else []  # fmt: skip
                evidence = {"group_links": links, "product_links": [], "product_checks": []}
                rows.append({
                    "key": f"uploads/{TENANT}/{BATCH}/photo-{index:05d}.jpg",
                    "file": f"photo-{index:05d}.jpg", "sha256": sha, "group_id": group,
                    "product_id": product, "confidence": confidence, "is_group_centre": i == 0,
                    "colour": colour, "group_size": size, "product_size": 0,
                    "evidence": json.dumps(evidence, sort_keys=True),
                })  # fmt: skip
                index += 1
            group_no += 1
        product_no += 1
    clusters = pd.DataFrame(rows)
    clusters["product_size"] = clusters.groupby("product_id").file.transform("size")
    rejected = max(1, images // 50)
    raw = pd.DataFrame({
        "key": [*clusters.key, *(f"uploads/{TENANT}/{BATCH}/bad-{i}.txt" for i in range(rejected))],
        "file": [*clusters.file, *(f"bad-{i}.txt" for i in range(rejected))],
        "status": ["accepted"] * len(clusters) + ["rejected"] * rejected,
        "reason": [None] * len(clusters) + ["not_an_image: no known format"] * rejected,
    })  # fmt: skip
    renditions = pd.DataFrame({
        "key": clusters.key, "file": clusters.file, "sha256": clusters.sha256, "size": 256,
        "format": "webp", "status": "ok",
        "rendition_key": [f"renditions/bench/{s[:2]}/{s}/256.webp" for s in clusters.sha256],
    })  # fmt: skip
    return {"image_clusters": clusters, "raw_images": raw, "product_images": renditions}


def seed(images: int) -> tuple[int, int]:
    import dagster as dg

    from orchestration.editing import EditRequest, record_edit
    from orchestration.environment import ensure_environment, s3_from_env
    from orchestration.partitions import BatchKey

    ensure_environment()
    client, bucket = s3_from_env().get_client(), os.environ["PIPELINE_BUCKET"]
    tables = synthetic_tables(images)
    batch = BatchKey(TENANT, BATCH)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("upload_batches", [batch.partition_key])
        for asset, table in tables.items():
            buffer = io.BytesIO()
            table.to_parquet(buffer, index=False)
            key = f"tables/{asset}/{batch.partition_key}.parquet"
            client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
            meta = {"rows": len(table)}
            if asset == "raw_images":
                meta = {"objects": len(table), "rejected": int((table.status == "rejected").sum())}
            if asset == "image_clusters":
                meta = {"groups": table.group_id.nunique(), "products": table.product_id.nunique()}
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset, partition=batch.partition_key, metadata=meta)
            )
        clusters = tables["image_clusters"]
        multi = clusters.groupby("group_id").file.apply(list)
        multi = multi[multi.map(len) > 1]
        for group_id, files in list(multi.items())[:20]:
            request = EditRequest("split", who="bench", group=group_id, files=(files[-1],))
            record_edit(batch, request, clusters=clusters, instance=instance)
    return len(clusters), clusters.group_id.nunique()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # time the answer itself, not the page it redirects to


OPENER = urllib.request.build_opener(_NoRedirect)


def timed(url: str, headers: dict, data: bytes | None = None) -> tuple[float, float, str]:
    """(server ms, client ms, body) of one request."""
    started = time.perf_counter()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        response = OPENER.open(request, timeout=60)
    except urllib.error.HTTPError as exc:  # the edit's 303
        response = exc
    with response:
        body = response.read().decode()
        server = float(response.headers["Server-Timing"].split("dur=")[1])
    return server, (time.perf_counter() - started) * 1000, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    token = "bench-token-" + "x" * 20
    with throwaway_s3("review"):
        os.environ["REVIEW_TOKENS"] = f"{TENANT}:{token}"
        from orchestration.instance import ensure_dagster_home

        ensure_dagster_home()
        photos, groups = seed(args.images)
        import uvicorn

        from orchestration.local_s3 import _free_port
        from review.app import PRODUCTS_PER_PAGE, create_app

        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                               log_level="warning"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/t/{TENANT}/b/{BATCH}"
        auth = {"Authorization": f"Bearer {token}"}
        cold = timed(base, auth)
        warm = [timed(base, auth) for _ in range(10)]
        pages = int(re.search(r"products 1.\d+ of (\d+)", cold[2]).group(1))
        pages = -(-pages // PRODUCTS_PER_PAGE)
        every = [timed(f"{base}?page={n}", auth) for n in range(1, pages + 1)]
        version = re.search(r'name="version" value="(\w+)"', cold[2]).group(1)
        form = urllib.parse.urlencode({"op": "undo", "version": version}).encode()
        edit = timed(f"{base}/edit", auth, form)
        listing = timed(f"http://127.0.0.1:{port}/", auth)
        server.should_exit = True
        thread.join(10)
    median = statistics.median(s for s, _, _ in warm)
    print(f"synthetic batch: {photos} photos, {groups} groups, 20 edits; "
          f"{PRODUCTS_PER_PAGE} products a page, {len(every)} pages")  # fmt: skip
    print(f"batch page, cold (tables read from S3): server {cold[0]:.0f} ms, "
          f"client {cold[1]:.0f} ms, {len(cold[2]) / 1024:.0f} KiB of HTML")  # fmt: skip
    print(f"batch page, warm (10 requests): server median {median:.0f} ms, "
          f"max {max(s for s, _, _ in warm):.0f} ms")  # fmt: skip
    print(f"every page of products: server max {max(s for s, _, _ in every):.0f} ms")
    print(f"an edit (undo) round trip, redirect not followed: server {edit[0]:.0f} ms")
    print(f"batch list: server {listing[0]:.0f} ms")
    worst = max(cold[0], *(s for s, _, _ in every))
    print(f"under 1 s server-side: {'yes' if worst < 1000 else 'NO'} (worst {worst:.0f} ms)")


if __name__ == "__main__":
    main()
