"""Batch fetcher throughput: N objects at concurrency 1 vs C when every request pays network
latency, against a throwaway local S3.

The latency is a botocore ``before-send`` hook that sleeps in the sending thread: a round
trip paid once per request (and per retry), which requests in flight overlap as they would
over a real network. Both settings use one warmed-up client (the first requests load
endpoint rules and open pooled connections), alternate, and report the median of
``--repeats`` runs.

    .venv/bin/python bench/fetch.py [--objects 100] [--latency-ms 50] [--concurrency 5]
                                    [--batch-size 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from throwaway import throwaway_s3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with throwaway_s3("fetch"):
        from orchestration.environment import s3_from_env
        from resources.s3 import fetch_objects

        s3 = s3_from_env()
        s3.get_client().create_bucket(Bucket="bench-uploads")
        keys = [f"uploads/t/b/{i:04d}.jpg" for i in range(args.objects)]
        for key in keys:
            s3.get_client().put_object(Bucket="bench-uploads", Key=key, Body=b"x" * 200_000)
        client = s3.get_fetch_client()  # botocore retries off: the fetcher retries itself
        client.meta.events.register(
            "before-send.s3.GetObject", lambda **_: time.sleep(args.latency_ms / 1000)
        )
        settings = (1, args.concurrency)
        warm_up = keys[: 2 * args.concurrency]  # not timed
        fetch_objects(client, "bench-uploads", warm_up, max_concurrency=args.concurrency)
        runs: dict[int, list] = {c: [] for c in settings}
        for _ in range(args.repeats):
            for concurrency in settings:
                report = fetch_objects(client, "bench-uploads", keys,
                                       batch_size=args.batch_size,
                                       max_concurrency=concurrency)  # fmt: skip
                assert len(report.data) == len(keys), report.errors
                runs[concurrency].append(report.metadata())
        print(f"{len(keys)} objects of 200 kB, {args.latency_ms:g} ms added per request, "
              f"batch size {args.batch_size}, median of {args.repeats} runs")  # fmt: skip
        median = {}
        for concurrency, metas in runs.items():
            median[concurrency] = statistics.median(m["fetch_seconds"] for m in metas)
            per_request = statistics.median(m["fetch_avg_seconds"] for m in metas)
            each = ", ".join(f"{m['fetch_seconds']:.2f}" for m in metas)
            print(f"concurrency {concurrency}: {median[concurrency]:.2f} s (runs {each}); "
                  f"{per_request * 1000:.1f} ms per request, "
                  f"{per_request * 1000 - args.latency_ms:.1f} ms of it beyond the latency; "
                  f"peak in flight {metas[0]['fetch_max_concurrency']}, "
                  f"{metas[0]['fetch_batches']} batches")  # fmt: skip
        c = args.concurrency
        print(f"speed-up at concurrency {c}: {median[1] / median[c]:.2f}x "
              f"(ceiling {c}x: {c} requests in flight)")  # fmt: skip


if __name__ == "__main__":
    main()
