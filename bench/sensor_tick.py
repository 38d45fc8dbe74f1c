"""How long one upload-sensor tick takes, measured in one run on a throwaway local S3.

Ticks over 10,000 existing, already-handled keys with nothing new, then with 100 newly
sealed batches on top.

    .venv/bin/python bench/sensor_tick.py [--batches 100] [--files 99]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from throwaway import throwaway_s3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=100, help="existing sealed batches")
    parser.add_argument("--files", type=int, default=99, help="files per existing batch")
    parser.add_argument("--new", type=int, default=100, help="newly sealed batches")
    args = parser.parse_args()
    with throwaway_s3("sensor"):
        run(args)


def run(args) -> None:
    import dagster as dg
    from tqdm import tqdm

    from orchestration.definitions import defs
    from orchestration.environment import s3_from_env
    from sensors.upload_sensor import upload_sensor

    client = s3_from_env().get_client()
    client.create_bucket(Bucket="bench-uploads")
    keys = [f"uploads/shop{b % 10}/old{b:04d}/{f:03d}.jpg" for b in range(args.batches)
            for f in range(args.files)]  # fmt: skip
    keys += [f"uploads/shop{b % 10}/old{b:04d}/_SUCCESS" for b in range(args.batches)]

    def put_all(batch_keys: list[str]) -> None:
        with ThreadPoolExecutor(16) as pool:
            put = lambda k: client.put_object(Bucket="bench-uploads", Key=k, Body=b"")  # noqa: E731
            list(tqdm(pool.map(put, batch_keys), total=len(batch_keys), desc="upload"))

    put_all(keys)

    def tick(instance, cursor):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=defs.resources
        ) as context:
            started = time.perf_counter()
            result = upload_sensor(context)
            return result, time.perf_counter() - started

    with dg.instance_for_test() as instance:
        cursor = None
        while True:  # hand every existing batch, as the sensor would over its first ticks
            result, _ = tick(instance, cursor)
            cursor = result.cursor
            if not result.run_requests:
                break
        _, idle = tick(instance, cursor)
        print(f"{len(keys)} existing keys, nothing new: tick {idle:.2f} s")
        new = [f"uploads/new{b % 7}/b{b:04d}/{name}" for b in range(args.new)
               for name in ("1.jpg", "_SUCCESS")]  # fmt: skip
        put_all(new)
        result, busy = tick(instance, cursor)
        print(
            f"{len(keys) + len(new)} keys, {args.new} newly sealed batches: tick {busy:.2f} s, "
            f"{len(result.run_requests)} runs requested (cap per tick)"
        )
        print(f"ratio busy/idle: {busy / idle:.2f}")


if __name__ == "__main__":
    main()
