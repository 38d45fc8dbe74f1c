"""Memoisation, measured in one run against a throwaway local S3 (SeaweedFS).

Prints cold vs warm wall time for the same 200-image batch, and the memo hit rate of a
new batch that shares 80 % of its images with it. Photos are scikit-image's bundled
images and edits of them, upscaled to a phone-like long side (default 2,000 px).

    .venv/bin/python bench/memo.py [--images 200] [--long-side 2000]
"""

from __future__ import annotations

import argparse
import io
import random

from PIL import Image
from throwaway import throwaway_s3
from tqdm import tqdm

from photogroup.samples import PHOTOS, load_photo
from photogroup.variants import EDITS


def distinct_images(count: int, long_side: int, seed: int = 7) -> list[bytes]:
    """``count`` different JPEGs: each photo, its edits, then random crops of it."""
    rng = random.Random(seed)
    photos = [load_photo(name) for name in PHOTOS]
    images: list[Image.Image] = []
    for photo in photos:
        images.append(photo)
        images.extend(edit(photo) for edit in EDITS.values())
    while len(images) < count:
        photo = rng.choice(photos)
        w, h = photo.size
        left, top = rng.randint(0, w // 4), rng.randint(0, h // 4)
        images.append(photo.crop((left, top, left + w * 3 // 4, top + h * 3 // 4)))
    out = []
    for img in tqdm(images[:count], desc="encode", unit="img"):
        scale = long_side / max(img.size)
        big = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        big.convert("RGB").save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--long-side", type=int, default=2000)
    args = parser.parse_args()

    with throwaway_s3("memo"):
        run(args.images, args.long_side)


def run(count: int, long_side: int) -> None:
    import dagster as dg

    from orchestration.environment import s3_from_env
    from orchestration.partitions import BatchKey
    from orchestration.runner import run_batch

    client = s3_from_env().get_client()
    for bucket in ("bench-uploads", "bench-pipeline"):
        client.create_bucket(Bucket=bucket)
    images = distinct_images(count + count // 5, long_side)
    first, extra = images[:count], images[count:]
    shared = first[: count * 4 // 5] + extra[: count - count * 4 // 5]

    def upload(batch: str, blobs: list[bytes]) -> None:
        for i, body in enumerate(blobs):
            client.put_object(
                Bucket="bench-uploads", Key=f"uploads/bench/{batch}/{batch}-{i:04d}.jpg", Body=body
            )
        client.put_object(Bucket="bench-uploads", Key=f"uploads/bench/{batch}/_SUCCESS", Body=b"")

    upload("b1", first)
    upload("b2", shared)
    total_mb = sum(map(len, first)) / 1e6
    print(
        f"batch b1: {len(first)} images, {total_mb:.1f} MB; batch b2 shares "
        f"{count * 4 // 5} of its {len(shared)} images with b1"
    )
    with dg.DagsterInstance.get() as instance:
        _, cold = run_batch(BatchKey("bench", "b1"), instance)
        _, warm = run_batch(BatchKey("bench", "b1"), instance)
        _, overlap = run_batch(BatchKey("bench", "b2"), instance)
    print(
        f"cold run:  {cold['seconds']:.2f} s  (memo misses {cold['memo_misses']}, "
        f"embedder calls {cold['embedder_calls']}, bytes fetched {cold['bytes_fetched']})"
    )
    print(
        f"warm run:  {warm['seconds']:.2f} s  (memo hits {warm['memo_hits']}, "
        f"embedder calls {warm['embedder_calls']}, bytes fetched {warm['bytes_fetched']})"
    )
    print(f"warm/cold speed-up: {cold['seconds'] / warm['seconds']:.1f}x")
    print(
        f"80%-shared batch: hit rate {overlap['hit_rate']:.3f} over image stages "
        f"({overlap['memo_hits']} hits, {overlap['memo_misses']} misses), "
        f"{overlap['seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
