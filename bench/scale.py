"""Scale of the image stages, measured in one run on a throwaway local S3 (SeaweedFS).

Prints three things:

* throughput: a batch of ``--images`` synthetic JPEGs (gradients, shapes, sensor-like noise;
  ``--long-side`` px) through raw_images, image_features and image_embeddings, with 1 then 2
  worker processes per stage (run config ``processes``), each on an empty memo: images/s
  and their ratio;
* memory: peak RSS of raw_images, then of image_features, for a batch of ``--rss-images``
  smaller JPEGs at each of ``--chunk-sizes`` (run config ``chunk_size``), each stage in a
  fresh subprocess (so its peak, Linux's VmHWM, is that stage's) on an empty memo; and how
  big the features table and its memo pack are;
* sensor: how long an upload_sensor tick takes with ``--partitions`` batches registered as
  dynamic partitions in a Dagster instance (each batch one file and its _SUCCESS in the
  bucket): the first tick, which adopts them all, then a tick with every batch handled.

Stages run in-process (``dg.materialize``, one after the other), in subprocesses that share
the throwaway S3. About 20 minutes on 2 idle cores at the defaults (33 with a load average
of 5 from other work); every figure is printed with the load average at the time.

    .venv/bin/python bench/scale.py [--images 2000] [--rss-images 20000]
        [--chunk-sizes 32,512] [--partitions 10000] [--only throughput,memory,sensor]
"""

# Worker processes are spawned and import this file again: keep top-level imports light.
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

STAGES = ["raw_images", "image_features", "image_embeddings"]
#: Metadata worth printing, per stage.
KEPT = ("objects", "images", "memo_misses", "chunk_size", "processes", "compute_processes",
        "peak_rss_mb", "worker_peak_rss_mb", "parquet_bytes")  # fmt: skip


def synthetic_jpegs(job: tuple[int, int, int]) -> list[bytes]:
    """``count`` distinct JPEGs from seed ``first`` on: a two-colour gradient at a random
    angle, 4-12 random ellipses, boxes, polygons and lines, and grey noise so that JPEG sizes
    and ORB keypoints are closer to photos than flat shapes would be."""
    import numpy as np
    from PIL import Image, ImageDraw

    first, count, long_side = job
    out = []
    for seed in range(first, first + count):
        rng = np.random.default_rng(seed)
        short = long_side * 3 // 4
        w, h = (long_side, short) if seed % 3 else (short, long_side)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / (np.ptp(t) or 1.0)
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        pixels = a + (b - a) * t[..., None] + 6 * rng.standard_normal((h, w, 1), dtype=np.float32)
        img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(4, 13)):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
            kind = rng.integers(0, 4)
            if kind == 0:
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            elif kind == 1:
                draw.rectangle((x0, y0, x1, y1), fill=colour)
            elif kind == 2:
                points = [(int(x), int(y)) for x, y in rng.integers(0, (w, h), (5, 2))]
                draw.polygon(points, fill=colour)
            else:
                draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def put_all(client, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      objects.items()))  # fmt: skip


def upload_batch(client, bucket: str, partition: str, count: int, long_side: int) -> float:
    """Generate (on every core) and upload ``count`` images, then seal; returns MB uploaded."""
    from photogroup.chunks import imap_chunks

    step, total = 250, 0
    jobs = ((start, (start, min(step, count - start), long_side))
            for start in range(0, count, step))  # fmt: skip
    started = time.perf_counter()
    for start, blobs in imap_chunks(synthetic_jpegs, jobs, processes=os.cpu_count() or 1):
        names = {f"uploads/{partition}/{start + i:06d}.jpg": b for i, b in enumerate(blobs)}
        put_all(client, bucket, names)
        total += sum(map(len, blobs))
    client.put_object(Bucket=bucket, Key=f"uploads/{partition}/_SUCCESS", Body=b"")
    seconds = time.perf_counter() - started
    print(f"  uploaded {count} images of {long_side} px to {partition}: {total / 1e6:.0f} MB "
          f"({total / count / 1e3:.0f} kB each) in {seconds:.0f} s")  # fmt: skip
    return total / 1e6


def load() -> str:
    """The machine's load: on shared cores, other work slows every figure here."""
    return "load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def run_child(pipeline_bucket: str, stages: list[str], partition: str, config: dict) -> dict:
    """Materialise ``stages`` of ``partition`` in a fresh interpreter; its report."""
    spec = {"stages": stages, "partition": partition, "config": config}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env={**os.environ, "PIPELINE_BUCKET": pipeline_bucket},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"child failed ({spec}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _steps(stages: list[str]) -> set[str]:
    """The steps (ops) computing these assets: features and embeddings are one."""
    shared = {"image_features", "image_embeddings"}
    return {"image_analysis" if s in shared else s for s in stages}


def child(spec: dict) -> None:
    """In the subprocess: materialise, then print one JSON line of timings and metadata."""
    import dagster as dg

    from assets import ALL_ASSETS
    from orchestration.definitions import defs
    from orchestration.partitions import upload_batch_partitions
    from orchestration.runner import materializations
    from photogroup.chunks import peak_rss_mb

    imported = peak_rss_mb()
    stages, partition = spec["stages"], spec["partition"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(upload_batch_partitions.name, [partition])
        started = time.perf_counter()
        result = dg.materialize(
            ALL_ASSETS,
            selection=stages,
            partition_key=partition,
            resources=defs.resources,
            instance=instance,
            run_config={
                "ops": {step: {"config": spec["config"]} for step in _steps(stages)},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
        )
        seconds = time.perf_counter() - started
    steps = {e.step_key: e.event_specific_data.duration_ms / 1000
             for e in result.all_events if e.is_step_success}  # fmt: skip
    meta = {}
    for stage in stages:
        (event,) = materializations(result, stage)
        meta[stage] = {k: v.value for k, v in event.metadata.items() if k in KEPT}
    times = os.times()  # workers are reaped by now: their CPU is in the children's share
    report = {
        "seconds": seconds,
        "cpu_seconds": times.user + times.system + times.children_user + times.children_system,
        "steps": steps,
        "meta": meta,
        "imported_rss_mb": imported,
        "peak_rss_mb": peak_rss_mb(),  # VmHWM: ru_maxrss would include this bench's own RSS
        "worker_peak_rss_mb": max(m["worker_peak_rss_mb"] for m in meta.values()),
    }
    print(json.dumps(report))


def throughput(client, images: int, long_side: int) -> None:
    print(f"\n== throughput: {images} images, {' + '.join(STAGES)}, empty memo each ==")
    partition = f"bench/t{images}"
    upload_batch(client, "bench-uploads", partition, images, long_side)
    rates = {}
    for processes in (1, 2):
        bucket = f"bench-pipeline-t-p{processes}"
        client.create_bucket(Bucket=bucket)
        report = run_child(bucket, STAGES, partition, {"processes": processes})
        rates[processes] = images / report["seconds"]
        steps = ", ".join(f"{s} {report['steps'][s]:.1f} s" for s in STAGES)
        workers = [report["meta"][s]["compute_processes"] for s in STAGES]
        print(f"  processes={processes}: {report['seconds']:.1f} s, {rates[processes]:.1f} "
              f"images/s ({steps}; computing processes per stage {workers}; "
              f"{report['cpu_seconds'] / images * 1000:.0f} CPU-ms/image; peak RSS "
              f"{report['peak_rss_mb']:.0f} MB, largest worker "
              f"{report['worker_peak_rss_mb']:.0f} MB; {load()})")  # fmt: skip
    print(f"  ratio 2 processes / 1: {rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores")


def memory(client, images: int, long_side: int, chunk_sizes: list[int], processes: int) -> None:
    print(f"\n== memory: {images} images, peak RSS per stage and chunk size, "
          f"processes={processes}, empty memo each ==")  # fmt: skip
    partition = f"bench/m{images}"
    upload_batch(client, "bench-uploads", partition, images, long_side)
    print("  chunk   raw_images: s  peak MB  worker MB | image_features: s  peak MB  worker MB")
    baseline = None
    for size in chunk_sizes:
        bucket = f"bench-pipeline-m-c{size}"
        client.create_bucket(Bucket=bucket)
        cells = []
        for stage in ("raw_images", "image_features"):
            report = run_child(bucket, [stage], partition,
                               {"processes": processes, "chunk_size": size})  # fmt: skip
            baseline = report["imported_rss_mb"]
            cells.append(f"{report['seconds']:14.1f} {report['peak_rss_mb']:8.0f} "
                         f"{report['worker_peak_rss_mb']:10.0f}")  # fmt: skip
        print(f"  {size:5d} {cells[0]} | {cells[1]}   ({load()})")
    print(f"  (a fresh interpreter with the pipeline imported: {baseline:.0f} MB)")
    table_size(client, f"bench-pipeline-m-c{chunk_sizes[0]}", partition)


def table_size(client, bucket: str, partition: str) -> None:
    import pandas as pd

    from assets.versions import FEATURES_VERSION, WORK_VERSION

    key = f"tables/image_features/{partition}.parquet"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    table = pd.read_parquet(io.BytesIO(body))
    deep = table.memory_usage(deep=True)
    pack = f"memo/features/{FEATURES_VERSION}/work{WORK_VERSION}/packs/{partition}.json"
    pack_mb = client.head_object(Bucket=bucket, Key=pack)["ContentLength"] / 1e6
    print(f"  features table: {len(table)} rows, parquet {len(body) / 1e6:.0f} MB, in memory "
          f"{deep.sum() / 1e6:.0f} MB ({deep['keypoints'] / deep.sum():.0%} of it the ORB "
          f"keypoints column); memo pack {pack_mb:.0f} MB of JSON")  # fmt: skip


def sensor(client, partitions: int) -> None:
    import dagster as dg

    import sensors.upload_sensor as sensor_module
    from orchestration.definitions import defs
    from orchestration.partitions import upload_batch_partitions
    from sensors.sensor_state import MARGIN
    from sensors.upload_sensor import upload_sensor

    print(f"\n== sensor: {partitions} registered batches ==")
    bucket = "bench-sensor-uploads"  # only these batches, not the image batches above
    client.create_bucket(Bucket=bucket)
    os.environ["UPLOADS_BUCKET"] = bucket
    keys = [f"shop{b % 20:02d}/s{b:05d}" for b in range(partitions)]
    started = time.perf_counter()
    put_all(client, bucket, {f"uploads/{k}/{name}": b"" for k in keys
                             for name in ("0.jpg", "_SUCCESS")})  # fmt: skip
    print(f"  {2 * partitions} keys uploaded in {time.perf_counter() - started:.0f} s")

    def tick(instance, cursor):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=defs.resources
        ) as context:
            started = time.perf_counter()
            result = upload_sensor(context)
            return result, time.perf_counter() - started

    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        instance.add_dynamic_partitions(upload_batch_partitions.name, keys)
        print(f"  {partitions} dynamic partitions registered in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        # One tick takes every batch (the cap lifted), as if they had been run one by one.
        cap, sensor_module.MAX_RUNS_PER_TICK = sensor_module.MAX_RUNS_PER_TICK, partitions
        first, seconds = tick(instance, None)
        sensor_module.MAX_RUNS_PER_TICK = cap
        print(f"  first tick, cap lifted: {seconds:.2f} s, {len(first.run_requests)} runs "
              f"requested; cursor {len(first.cursor) / 1e3:.0f} kB (sealed in the last "
              f"{MARGIN.seconds // 60} minutes)")  # fmt: skip
        idle, cursor = [], first.cursor
        for _ in range(3):
            result, seconds = tick(instance, cursor)
            assert not result.run_requests
            idle.append(seconds)
        # The same, once the sealings are older than the cursor's margin.
        now = sensor_module.clock
        sensor_module.clock = lambda: now() + MARGIN
        later, seconds = tick(instance, cursor)
        sensor_module.clock = now
        assert not later.run_requests
        print(f"  tick with all {partitions} handled, nothing new: {min(idle):.2f} s "
              f"(best of 3); {MARGIN.seconds // 60} minutes later {seconds:.2f} s, cursor "
              f"{len(later.cursor)} bytes; {load()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="throughput batch")
    parser.add_argument("--long-side", type=int, default=640, help="throughput images, px")
    parser.add_argument("--rss-images", type=int, default=20000, help="memory batch")
    parser.add_argument("--rss-long-side", type=int, default=320, help="memory images, px")
    parser.add_argument("--chunk-sizes", default="32,512")
    parser.add_argument("--rss-processes", type=int, default=1, help="memory runs' processes")
    parser.add_argument("--partitions", type=int, default=10000)
    parser.add_argument("--only", default="throughput,memory,sensor")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from throwaway import throwaway_s3

    parts = set(args.only.split(","))
    started = time.perf_counter()
    with throwaway_s3("scale"):
        from orchestration.environment import s3_from_env

        client = s3_from_env().get_client()
        client.create_bucket(Bucket="bench-uploads")
        if "throughput" in parts:
            throughput(client, args.images, args.long_side)
        if "memory" in parts:
            sizes = [int(s) for s in args.chunk_sizes.split(",")]
            memory(client, args.rss_images, args.rss_long_side, sizes, args.rss_processes)
        if "sensor" in parts:
            sensor(client, args.partitions)
    print(f"\nbench/scale.py took {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
