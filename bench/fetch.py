"""Batch fetcher throughput: 100 objects at concurrency 1 vs 5 when each request pays
network latency (added with a botocore hook), against a throwaway local S3.

    .venv/bin/python bench/fetch.py [--objects 100] [--latency-ms 50] [--concurrency 5]
"""

from __future__ import annotations

import argparse
import time

from throwaway import throwaway_s3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=5)
    args = parser.parse_args()
    with throwaway_s3("fetch"):
        from orchestration.environment import s3_from_env
        from resources.s3 import fetch_objects

        client = s3_from_env().get_client()
        client.create_bucket(Bucket="bench-uploads")
        keys = [f"uploads/t/b/{i:04d}.jpg" for i in range(args.objects)]
        for key in keys:
            client.put_object(Bucket="bench-uploads", Key=key, Body=b"x" * 200_000)
        client.meta.events.register(
            "before-send.s3.GetObject", lambda **_: time.sleep(args.latency_ms / 1000)
        )
        timings = {}
        for concurrency in (1, args.concurrency):
            report = fetch_objects(client, "bench-uploads", keys, max_concurrency=concurrency)
            assert len(report.data) == len(keys), report.errors
            timings[concurrency] = report.seconds
            print(f"concurrency {concurrency}: {report.seconds:.2f} s for {len(keys)} objects")
        print(f"speed-up at concurrency {args.concurrency}: "
              f"{timings[1] / timings[args.concurrency]:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
