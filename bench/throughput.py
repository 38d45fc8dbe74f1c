"""Throughput of a whole batch run on phone photos, cold then warm, against the decode floor.

``--images`` fresh 12 MP phone JPEGs (4032x3024, from scikit-image's photos as in
``features_speed.py``, cached in ``bench/.cache``) are uploaded to a throwaway local S3
(``throwaway.py``) and run as one batch twice, the way ``python -m orchestration run`` does
(``orchestration.runner.run_batch``, in-process): the grouping stages alone, cold (empty
memo); then the whole job cold (the memo emptied again) and warm (the same batch again). The
grouping stages are timed alone because in a whole run ``raw_images``' step also makes the
renditions from its decode. Each run is a fresh interpreter, so its peak RSS (Linux's VmHWM)
is the run's own. The pipeline bucket is written to once before the first run (the local
S3's volumes for a new bucket are made on its first writes; see ``_settle``).

Printed per run: seconds and images/min of every step, of the grouping stages (upload to
``image_clusters``), of everything but ``product_cutouts``, and of the whole run; each rate's
ratio to Pillow's draft decoding of the same files (to the 512 px working size, one thread,
measured in this process just before); peak RSS; and per image, the GETs of uploads, of
working copies and of other pipeline objects (a botocore hook on every S3 client the run
creates) and the decodes by format (a counter on Pillow's ``ImageFile.load`` when it has
tiles to decode, in the run's process: stages whose chunks go to worker processes are not
counted there, which they do by default only from 256 images to compute).

    .venv/bin/python bench/throughput.py [--images 120]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

PHONE_SIZE = (4032, 3024)
TENANT, BATCH = "bench", "phones"
# Steps up to image_clusters: image_analysis computes features and embeddings in one step
# (before issue 19's stage engine they were the steps image_features and image_embeddings).
GROUPING = ("raw_images", "image_features", "image_embeddings", "image_analysis", "image_clusters")
CUTOUTS = "product_cutouts"
GROUPING_ASSETS = ["raw_images", "image_features", "image_embeddings", "image_clusters"]


def draft_floor(paths: list[Path]) -> float:
    """Images/min of Pillow's draft decoding to the working size, bytes already in memory."""
    from PIL import Image

    datas = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    for data in datas:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (512, 512))
            img.convert("RGB")
    return len(datas) / (time.perf_counter() - started) * 60


def _count_gets(gets: Counter, lock: threading.Lock) -> None:
    """Every S3 client of the run counts its GetObject calls by kind of object."""
    from resources.s3 import S3Resource

    create = S3Resource.create_client

    def counting(self):
        client = create(self)

        def note(params, **_):
            key = params["Key"]
            kind = "upload" if key.startswith("uploads/") else "other"
            if "/work/" in key or key.startswith("work/"):
                kind = "working copy"
            with lock:
                gets[kind] += 1

        client.meta.events.register("provide-client-params.s3.GetObject", note)
        return client

    S3Resource.create_client = counting


def _count_decodes(decodes: Counter, lock: threading.Lock) -> None:
    """Pillow decodes an image when ``load`` finds tiles left: count those, by format."""
    from PIL import ImageFile

    load = ImageFile.ImageFile.load

    def counting(self):
        if self.tile:
            with lock:
                decodes[self.format or "?"] += 1
        return load(self)

    ImageFile.ImageFile.load = counting


def child(selection: list[str] | None) -> None:
    """In a fresh interpreter: run the batch once (``selection``: only these assets), print
    one JSON line."""
    import dagster as dg

    from orchestration.partitions import BatchKey
    from orchestration.runner import run_batch
    from photogroup.chunks import peak_rss_mb

    gets, decodes, lock = Counter(), Counter(), threading.Lock()
    _count_gets(gets, lock)
    _count_decodes(decodes, lock)
    steps: dict[str, float] = {}
    batch = BatchKey(TENANT, BATCH)
    with dg.DagsterInstance.get() as instance:
        ok, summary = run_batch(batch, instance, selection)
        run = instance.get_run_by_id(summary["run_id"])
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is not None and event.is_step_success:
                steps[event.step_key] = event.event_specific_data.duration_ms / 1000
    report = {"ok": ok, "seconds": summary["seconds"], "images": summary["images"],
              "steps": steps, "gets": gets, "decodes": decodes,
              "peak_rss_mb": peak_rss_mb()}  # fmt: skip
    print(json.dumps(report))


def run_once(selection: list[str] | None = None) -> dict:
    select = ["--select", ",".join(selection)] if selection else []
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *select],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if proc.returncode != 0:
        sys.exit(f"run failed:\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if not report["ok"]:
        sys.exit(f"run did not succeed:\n{proc.stderr[-4000:]}")
    return report


def print_run(label: str, report: dict, floor: float) -> None:
    n, steps = report["images"], report["steps"]

    def rate(seconds: float) -> str:
        per_min = n / seconds * 60 if seconds else float("inf")
        return f"{seconds:7.1f} s {per_min:8.0f} images/min {per_min / floor:6.2f}x floor"

    print(f"\n== {label}: {n} images, peak RSS {report['peak_rss_mb']:.0f} MB ({load()}) ==")
    for step, seconds in steps.items():
        print(f"  {step:<28} {rate(seconds)}")
    grouping = sum(steps.get(s, 0.0) for s in GROUPING)
    # In a whole run the raw_images step also makes the renditions from its decode.
    name = "grouping (upload..clusters)" if CUTOUTS not in steps else "grouping + renditions"
    print(f"  {name:<28} {rate(grouping)}")
    print(f"  {'all but cut-outs':<28} {rate(sum(steps.values()) - steps.get(CUTOUTS, 0.0))}")
    print(f"  {'whole run':<28} {rate(report['seconds'])}")
    gets = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(report["gets"].items()))
    decodes = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(report["decodes"].items()))
    print(f"  per image: GETs {gets or 'none'}; decodes {decodes or 'none'}")


def _empty(client, bucket: str) -> None:
    """Every table and memo entry removed: the next run is cold again."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000]})


def _settle(client, bucket: str) -> None:
    """Write to a new bucket once before timing anything: SeaweedFS grows a new bucket's
    first volumes on its first writes, about a second that a deployed pipeline bucket
    never pays again (the first chunk's memo writes took 1.03 s, the later ones 0.06 s).
    Memo and tables stay empty: the runs are as cold as before."""
    client.put_object(Bucket=bucket, Key="settle", Body=b"")
    client.delete_object(Bucket=bucket, Key="settle")


def load() -> str:
    return "load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--select", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child([a for a in args.select.split(",") if a] or None)
        return

    import photos
    from features_speed import phone_jpegs
    from scale import put_all
    from throwaway import throwaway_s3

    # scikit-image's photos only: the others need the bench extra.
    sources = [n for n in (*photos.COLOUR, *photos.GREY) if n.startswith("skimage:")]
    paths = phone_jpegs(args.images, sizes=(PHONE_SIZE,), name="throughput", sources=sources)
    floor = draft_floor(paths)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"{len(paths)} JPEGs of {PHONE_SIZE[0]}x{PHONE_SIZE[1]} ({mb / len(paths):.1f} MB "
          f"each); Pillow draft decode to 512 px: {floor:.0f} images/min (one thread)")  # fmt: skip
    with throwaway_s3("throughput"):
        from orchestration.environment import s3_from_env
        from resources.uploads import SEAL_MARKER

        client = s3_from_env().get_client()
        for bucket in (os.environ["UPLOADS_BUCKET"], os.environ["PIPELINE_BUCKET"]):
            client.create_bucket(Bucket=bucket)
        _settle(client, os.environ["PIPELINE_BUCKET"])
        prefix = f"uploads/{TENANT}/{BATCH}/"
        put_all(client, os.environ["UPLOADS_BUCKET"],
                {prefix + p.name: p.read_bytes() for p in paths})  # fmt: skip
        client.put_object(Bucket=os.environ["UPLOADS_BUCKET"], Key=prefix + SEAL_MARKER, Body=b"")
        # The grouping stages alone first (renditions share raw_images' step and its decode
        # in a whole run, so there they are not separable): then an empty memo again.
        grouping = run_once(GROUPING_ASSETS)
        print_run("cold, grouping stages alone (empty memo)", grouping, floor)
        _empty(client, os.environ["PIPELINE_BUCKET"])
        cold = run_once()
        print_run("cold (empty memo)", cold, floor)
        warm = run_once()
        print_run("warm (same batch again)", warm, floor)
    print(f"\nwarm run {cold['seconds'] / warm['seconds']:.1f}x faster than cold")


if __name__ == "__main__":
    main()
