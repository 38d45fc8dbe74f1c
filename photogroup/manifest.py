"""One uploaded object -> one manifest verdict (accepted with facts, or rejected with why),
and, from the same decode, its web renditions when they are wanted."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from photogroup.chunks import worker_threads
from photogroup.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    WORK_SIZE,
    Rejection,
    decode_upload,
    encode_work_image,
    sniff_content_type,
)
from photogroup.renditions import Rendition, RenditionSpec, render

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
    work_bytes: bytes | None  # the normalised working copy of an accepted image
    #: Renditions of an accepted image when asked for, or why they could not be made.
    renditions: list[Rendition] | None = field(default=None, repr=False)
    rendition_error: str | None = None

    def row(self) -> dict:
        """The fields that go into the manifest (and its memo entry)."""
        products = ("work_bytes", "renditions", "rendition_error")
        return {k: v for k, v in self.__dict__.items() if k not in products}


def inspect_upload(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    renditions: RenditionSpec | None = None,
) -> Inspection:
    """Fingerprint and fully validate one upload; never raises for bad input.

    With a ``renditions`` spec, an accepted upload's renditions are made from the same
    decode as its working copy (decoded large enough for the largest rendition): one decode
    of each upload serves the manifest and the renditions.
    """
    sha = hashlib.sha256(data).hexdigest()
    long_side = 3 * WORK_SIZE // 4
    if renditions is not None:
        long_side = max(long_side, renditions.long_side())
    try:
        upload = decode_upload(data, max_pixels=max_pixels, max_bytes=max_bytes,
                               long_side=long_side)  # fmt: skip
    except Rejection as rejection:
        reason = str(rejection)
    except Exception as exc:  # a decoder bug on a hostile file must not fail a batch
        reason = f"decoder_error: {type(exc).__name__}: {exc}"
    else:
        made, error = None, None
        if renditions is not None:
            try:
                made = render(upload, renditions)
            except Exception as exc:  # an encoder failure is the renditions' row, not ours
                error = f"render_error: {type(exc).__name__}: {exc}"
        return Inspection(
            sha,
            upload.content_type,
            upload.width,
            upload.height,
            upload.frames,
            ACCEPTED,
            None,
            encode_work_image(upload.work_copy()),
            made,
            error,
        )
    return Inspection(sha, sniff_content_type(data), None, None, None, REJECTED, reason, None)


def inspect_uploads(
    blobs: Sequence[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    renditions: RenditionSpec | None = None,
    threads: int | None = None,
) -> list[Inspection]:
    """:func:`inspect_upload` of each upload, on ``threads`` (default: a pool worker's share
    of the cores, else one per core: Pillow releases the GIL while decoding, resizing and
    encoding, and more threads than cores would only hold more decoded images at once).
    Module-level so that worker processes can run it."""
    inspect = partial(inspect_upload, max_pixels=max_pixels, max_bytes=max_bytes,
                      renditions=renditions)  # fmt: skip
    threads = threads or worker_threads() or os.cpu_count() or 1
    if threads == 1:
        return [inspect(data) for data in blobs]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(inspect, blobs))
