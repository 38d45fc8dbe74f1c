"""One uploaded object -> one manifest verdict (accepted with facts, or rejected with why)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from photogroup.chunks import worker_threads
from photogroup.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    Rejection,
    decode_image,
    encode_work_image,
    sniff_content_type,
)

ACCEPTED = "accepted"
REJECTED = "rejected"


@dataclass(frozen=True)
class Inspection:
    sha256: str
    content_type: str | None  # sniffed from the bytes; None when unrecognised
    width: int | None
    height: int | None
    frames: int | None
    status: str  # ACCEPTED or REJECTED
    reason: str | None  # "<code>: <detail>" for rejections
    work_png: bytes | None  # the normalised working copy of an accepted image

    def row(self) -> dict:
        """The fields that go into the manifest (and its memo entry)."""
        return {k: v for k, v in self.__dict__.items() if k != "work_png"}


def inspect_upload(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> Inspection:
    """Fingerprint and fully validate one upload; never raises for bad input."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    except Rejection as rejection:
        reason = str(rejection)
    except Exception as exc:  # a decoder bug on a hostile file must not fail a batch
        reason = f"decoder_error: {type(exc).__name__}: {exc}"
    else:
        return Inspection(
            sha,
            decoded.content_type,
            decoded.width,
            decoded.height,
            decoded.frames,
            ACCEPTED,
            None,
            encode_work_image(decoded.image),
        )
    return Inspection(sha, sniff_content_type(data), None, None, None, REJECTED, reason, None)


def inspect_uploads(
    blobs: Sequence[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> list[Inspection]:
    """:func:`inspect_upload` of each upload, on ``threads`` (default: a pool worker's share
    of the cores, else ThreadPoolExecutor's default; Pillow releases the GIL while decoding).
    Module-level so that worker processes can run it."""
    inspect = partial(inspect_upload, max_pixels=max_pixels, max_bytes=max_bytes)
    threads = threads or worker_threads()
    if threads == 1:
        return [inspect(data) for data in blobs]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(inspect, blobs))
