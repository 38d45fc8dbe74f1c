"""What a HEIC upload costs to decode against a JPEG of the same photo, one thread.

``--images`` 12 MP phone photos (``features_speed.phone_jpegs``, the same files as
``throughput.py``) are also encoded as HEIC (pillow-heif, quality 80, in memory), then each
set goes through ``photogroup.decode.decode_upload`` at the working copy's size (384 px:
what ``decode_image`` asks for) and at the largest rendition's (1024 px), in this process,
one after the other. A JPEG is decoded at the smallest DCT scale that keeps the size
asked for; HEVC has no such scale, so a HEIC is decoded in full whatever the size.

    .venv/bin/python bench/heic_decode.py [--images 12]
"""

from __future__ import annotations

import argparse
import io
import time

from features_speed import phone_jpegs
from PIL import Image

from photogroup.decode import decode_upload

PHONE_SIZE = (4032, 3024)


def per_image_ms(datas: list[bytes], long_side: int) -> float:
    started = time.perf_counter()
    for data in datas:
        decode_upload(data, long_side=long_side)
    return (time.perf_counter() - started) / len(datas) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    paths = phone_jpegs(args.images, sizes=(PHONE_SIZE,), name="heic")
    jpegs = [p.read_bytes() for p in paths]
    heics = []
    for data in jpegs:
        out = io.BytesIO()
        Image.open(io.BytesIO(data)).save(out, format="HEIF", quality=80)
        heics.append(out.getvalue())
    mb = {n: sum(map(len, d)) / len(d) / 1e6 for n, d in (("JPEG", jpegs), ("HEIC", heics))}
    print(f"{len(jpegs)} photos of {PHONE_SIZE[0]}x{PHONE_SIZE[1]}: JPEG {mb['JPEG']:.1f} MB, "
          f"HEIC {mb['HEIC']:.1f} MB each; decode_upload, one thread, ms per image")  # fmt: skip
    for long_side in (384, 1024):
        jpeg, heic = per_image_ms(jpegs, long_side), per_image_ms(heics, long_side)
        print(f"  to {long_side:4d} px: JPEG {jpeg:5.0f}  HEIC {heic:5.0f}  ({heic / jpeg:.1f}x)")


if __name__ == "__main__":
    main()
