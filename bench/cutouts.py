"""Cut-out rates: in-process providers on 12 MP phone JPEGs (``--phones``), or Replicate's
two phases (create all, then poll) against one at a time (the default).

    .venv/bin/python bench/cutouts.py --phones 120 [--providers u2netp u2netp@320 grabcut]

``--phones N``: N fresh 12 MP phone JPEGs (4032x3024, from scikit-image's photos, the
files ``bench/throughput.py`` uploads, cached in ``bench/.cache``) become their 1024 px
JPEG renditions (``photogroup.renditions.render``, what ``product_images`` stores; timed
apart) and each provider then does ``product_cutouts``' work on them, in memory: decode the
rendition, ``cut_out`` 16 at a time, and encode the RGBA cut-out and the mask as PNG on a
writer thread meanwhile (``photogroup.cutout.encode_png`` of ``apply_mask(clear=True)``, as
the asset does); only the S3 reads and writes are left out. Printed: images/min (wall), CPU
ms per image and the load average (the machine is shared: compare rates measured in the
same run).

Replicate:

    .venv/bin/python bench/cutouts.py [--images 1000] [--rpm 500] [--latency 2 10]
                                      [--time-scale 0.03] [--poll-interval 0.5]
                                      [--design both|two-phase|sequential]

Both designs of ``resources.replicate_cutouts.ReplicateCutouts`` run in one process
against the Replicate stand-in (``tests/standins/replicate_api.py``, real HTTP on
127.0.0.1), which allows ``--rpm`` creates per trailing minute (429 beyond) and finishes
each prediction after a seeded latency drawn from ``--latency`` seconds; the images are
64 x 64 synthetic PNGs (a flat backdrop and two shapes), every mask is checked.

* two phases: ``cut_out``, the create limiter at 90% of ``--rpm``;
* one at a time: ``create_and_wait_sequential`` (create, poll every ``--poll-interval``
  until done, download, next), the same limiter (it never has to wait).

Time scale: at real time the one-at-a-time run alone would take about 110 minutes, so the
stand-in multiplies its latencies and its rate window by ``--time-scale`` and the client
does the same to its own durations (poll interval, backoff, timeout, the limiter's clock):
at the default 0.03, a "2-10 s" prediction takes 60-300 ms and "a minute" is 1.8 s, and the
whole bench takes about 3.5 minutes here. Figures are printed twice: measured (wall seconds,
scaled) and converted back to real time (divided by the time scale). ``--time-scale 1``
runs at real time. The conversion also stretches local HTTP overhead (~1 ms a request
here) by 1 / time_scale, so converted figures are on the slow side, the two-phase run's
polling phase most (2,000 requests back to back).

Measured on the 2-core development machine (shared), defaults (1,000 images, 500 RPM,
2-10 s, time scale 0.03), 3 min 20 s wall in all; real-time equivalents:

* two phases: 1,000/1,000 masks right in 3.66 min = 273 images/min (creates 2.31 min at
  the limiter's 450/min, polls and downloads 1.34 min; 296/min in a two-phase-only run,
  the machine is shared);
* one at a time: 1,000/1,000 in 106.8 min = 9.4 images/min (p50 6.3 s per image);
* 29 x; no 429 in either run, the busiest trailing minute held 451 creates (bucket:
  450/min plus a burst of 7, under the 500).

The two-phase figure is the one the conversion hurts: alone at ``--design two-phase
--time-scale 0.2`` (31 s wall) it is 2.56 min = 390 images/min, polls and downloads 0.35
min, i.e. about 41 x the baseline. Its ceiling is the limiter's 450/min plus one latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from photogroup.ratelimit import most_in_window

ROOT = Path(__file__).resolve().parent.parent


def synthetic_images(n: int, seed: int = 0, size: int = 64) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(170, 256, 3)))
        draw = ImageDraw.Draw(img)
        x, y = (int(v) for v in rng.integers(6, size // 2, 2))
        draw.ellipse([x, y, x + size // 3, y + size // 4], fill=(30, 60, 150))
        x, y = (int(v) for v in rng.integers(6, size // 2, 2))
        draw.rectangle([x, y, x + size // 5, y + size // 3], fill=(140, 40, 40))
        images.append(img)
    return images


def run(mode: str, args: argparse.Namespace, standin, images: list[Image.Image]) -> dict:
    from resources.replicate_cutouts import ReplicateCutouts
    from tests.standins.replicate_api import VERSION, mask_for, scaled_limiter

    scale = args.time_scale
    client = ReplicateCutouts(
        standin.token,
        VERSION,
        base_url=standin.base_url,
        limiter=scaled_limiter(args.rpm, scale, headroom=0.9),
        poll_limiter=scaled_limiter(3000, scale, headroom=0.9),
        create_concurrency=args.create_concurrency,
        poll_concurrency=args.poll_concurrency,
        poll_interval=args.poll_interval * scale,
        prediction_timeout=300 * scale,
        backoff_base=1.0 * scale,
        backoff_cap=8.0 * scale,
    )
    standin.reset()
    started = time.monotonic()
    if mode == "two phases":
        outcomes = client.cut_out(images)
    else:
        outcomes = client.create_and_wait_sequential(images)
    wall = time.monotonic() - started
    correct = sum(
        o.mask is not None and np.array_equal(np.asarray(o.mask), np.asarray(mask_for(img)))
        for o, img in zip(outcomes, images, strict=True)
    )
    creates = standin.recorded("create")
    stats = client.stats()
    return {
        "mode": mode,
        "correct": correct,
        "wall": wall,
        "real_minutes": wall / scale / 60,
        "per_minute": len(images) / (wall / scale / 60),
        "p50": stats["latency_p50_seconds"] / scale,
        "p95": stats["latency_p95_seconds"] / scale,
        "creates": len(creates),
        "throttled": sum(r.status == 429 for r in creates),
        "busiest_minute": most_in_window([r.arrived for r in creates], standin.window),
        "requests": len(standin.recorded()),
        "phases": (
            stats["last_create_phase_seconds"] / scale / 60,
            stats["last_poll_phase_seconds"] / scale / 60,
        ),
    }


def phones(count: int, providers: list[str]) -> None:
    """``product_cutouts``' work on ``count`` phone JPEGs' 1024 px renditions, per provider."""
    import io
    import os
    from concurrent.futures import ThreadPoolExecutor

    import photos
    from features_speed import phone_jpegs
    from throughput import PHONE_SIZE

    from assets.product_cutouts import LOCAL_SLICE
    from photogroup.chunks import one_blas_thread
    from photogroup.cutout import apply_mask, encode_png
    from photogroup.cutout_providers import LocalCutouts
    from photogroup.renditions import RenditionSpec, render
    from photogroup.u2netp import TRAINED_SIDE, U2netpCutouts

    one_blas_thread()  # as every pipeline process does (orchestration/definitions.py)
    sources = [n for n in (*photos.COLOUR, *photos.GREY) if n.startswith("skimage:")]
    paths = phone_jpegs(count, sizes=(PHONE_SIZE,), name="throughput", sources=sources)
    spec = RenditionSpec(sizes=(1024,), formats=("jpeg",))
    started = time.perf_counter()
    renditions = [render(p.read_bytes(), spec)[0].data for p in paths]
    seconds = time.perf_counter() - started
    print(
        f"{len(paths)} JPEGs of {PHONE_SIZE[0]}x{PHONE_SIZE[1]}; their 1024 px renditions "
        f"(product_images' share, one thread): {len(paths) / seconds * 60:.0f} images/min"
    )
    makers = {
        "u2netp": U2netpCutouts,
        "u2netp@320": lambda: U2netpCutouts(side=TRAINED_SIDE),  # the graph's own size
        "grabcut": lambda: LocalCutouts(threads=2),
    }

    def store(images, outcomes) -> int:
        written = 0
        for image, outcome in zip(images, outcomes, strict=True):
            written += len(encode_png(apply_mask(image, outcome.mask, clear=True)))
            written += len(encode_png(outcome.mask))
        return written

    for name in providers:
        provider = makers[name]()
        provider.cut_out([Image.open(io.BytesIO(renditions[0])).convert("RGB")])  # warm-up
        started, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(1) as writer:
            stored = []
            for start in range(0, len(renditions), LOCAL_SLICE):
                images = [
                    Image.open(io.BytesIO(data)).convert("RGB")
                    for data in renditions[start : start + LOCAL_SLICE]
                ]
                stored.append(writer.submit(store, images, provider.cut_out(images)))
            png_bytes = sum(f.result() for f in stored)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"  {name:10s} {len(paths) / wall * 60:6.0f} images/min, {cpu / len(paths) * 1e3:4.0f}"
            f" CPU ms/image, PNGs {png_bytes / len(paths) / 1e3:.0f} kB/image "
            f"(load average {os.getloadavg()[0]:.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--phones",
        type=int,
        default=0,
        help="in-process providers on N 12 MP phone JPEGs instead of the Replicate stand-in",
    )
    parser.add_argument("--providers", nargs="+", default=["u2netp", "grabcut"],
                        choices=["u2netp", "u2netp@320", "grabcut"])  # fmt: skip
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rpm", type=int, default=500, help="stand-in's creates per minute")
    parser.add_argument("--latency", type=float, nargs=2, default=(2.0, 10.0), metavar="S")
    parser.add_argument("--time-scale", type=float, default=0.03)
    parser.add_argument("--poll-interval", type=float, default=0.5, help="real-time seconds")
    parser.add_argument("--create-concurrency", type=int, default=4)
    parser.add_argument("--poll-concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--design", choices=("both", "two-phase", "sequential"), default="both",
        help="run one design only (e.g. two-phase at a larger --time-scale)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.phones:
        phones(args.phones, args.providers)
        return

    from tests.standins.replicate_api import ReplicateStandIn

    scale = args.time_scale
    images = synthetic_images(args.images, args.seed)
    low, high = args.latency
    print(
        f"{args.images:,} images, stand-in at {args.rpm} creates/min and {low:g}-{high:g} s "
        f"latency, time scale {scale:g} (1 real second = {scale * 1000:g} ms of wall clock; "
        f"a stand-in minute = {60 * scale:g} s)"
    )
    expected_seq = args.images * ((low + high) / 2 + args.poll_interval) * scale
    results = []
    with ReplicateStandIn(
        create_limit_per_minute=args.rpm,
        latency=(low, high),
        time_scale=scale,
        seed=args.seed,
    ) as standin:
        modes = {"both": ("two phases", "one at a time"), "two-phase": ("two phases",)}.get(
            args.design, ("one at a time",)
        )
        for mode in modes:
            note = f" (about {expected_seq / 60:.1f} wall minutes)" if mode != "two phases" else ""
            print(f"running {mode}{note} ...", flush=True)
            results.append(run(mode, args, standin, images))

    print()
    print(
        f"{'design':<14} {'masks ok':>9} {'wall s':>8} {'real min':>9} {'img/min':>8} "
        f"{'p50 s':>7} {'p95 s':>7} {'creates':>8} {'429s':>5} {'max/min':>8}"
    )
    for r in results:
        print(
            f"{r['mode']:<14} {r['correct']:>5}/{args.images:<3} {r['wall']:>8.1f} "
            f"{r['real_minutes']:>9.2f} {r['per_minute']:>8.1f} {r['p50']:>7.1f} "
            f"{r['p95']:>7.1f} {r['creates']:>8} {r['throttled']:>5} {r['busiest_minute']:>8}"
        )
    print()
    print(
        "wall s: measured on the scaled stand-in; real min, img/min, p50/p95 (create to mask, "
        f"seconds): converted to real time (divided by {scale:g}). max/min: most creates in "
        "any trailing stand-in minute."
    )
    by_mode = {r["mode"]: r for r in results}
    if (two := by_mode.get("two phases")) is not None:
        create_min, poll_min = two["phases"]
        print(
            f"two phases: creates {create_min:.2f} real min (limiter at 90% of {args.rpm}/min), "
            f"polls and downloads {poll_min:.2f} real min"
        )
    if len(results) == 2:
        one = by_mode["one at a time"]
        print(
            f"two phases vs one at a time: {two['per_minute']:.1f} vs {one['per_minute']:.1f} "
            f"images/min (real time) = {two['per_minute'] / one['per_minute']:.1f} x"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
