"""Web renditions of an upload: sizes x formats, oriented, sRGB, metadata stripped.

What a catalogue page needs from a phone photo: the long side at a few fixed sizes, EXIF
orientation applied to the pixels (so no viewer has to), colours converted to sRGB from
any embedded ICC profile (CMYK and wide-gamut files otherwise shift colour in browsers),
and no EXIF, GPS or ICC block in the output. Never upscaled: a rendition larger than the
original is the original's size. WebP keeps transparency; JPEG flattens it onto white.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass

from PIL import Image

from photogroup.decode import DEFAULT_MAX_PIXELS, Upload, decode_upload, to_rgb

FORMATS = {"webp": "WEBP", "jpeg": "JPEG"}
#: The HTTP media type of each format (stored with each rendition, served by the review app).
MEDIA_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class RenditionSpec:
    sizes: tuple[int, ...] = (256, 512, 1024)
    formats: tuple[str, ...] = ("webp", "jpeg")
    jpeg_quality: int = 85
    webp_quality: int = 80

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 16 or s > 8192 for s in self.sizes):
            raise ValueError(f"sizes must be 16-8192 px, got {self.sizes}")
        unknown = set(self.formats) - set(FORMATS)
        if not self.formats or unknown:
            raise ValueError(f"formats must be among {sorted(FORMATS)}, got {self.formats}")
        for q in (self.jpeg_quality, self.webp_quality):
            if not 1 <= q <= 100:
                raise ValueError(f"quality must be 1-100, got {q}")

    def long_side(self) -> int:
        """Pixels the decode must keep on the long side: the largest rendition's."""
        return max(self.sizes)

    def digest(self) -> str:
        """Short id of these settings: part of every rendition's key and memo namespace."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Rendition:
    size: int  # the requested long side
    format: str  # "webp" or "jpeg"
    width: int
    height: int
    data: bytes


def render(
    data: bytes | Upload, spec: RenditionSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[Rendition]:
    """Every (size, format) of ``spec`` for one image, largest size first: from its bytes,
    or from the upload as :func:`~photogroup.decode.decode_upload` already decoded it (at
    least :meth:`RenditionSpec.long_side` pixels), so the manifest and the renditions share
    one decode.

    Raises:
        Rejection: any of :func:`~photogroup.decode.decode_upload`'s.
    """
    if isinstance(data, bytes):
        data = decode_upload(data, max_pixels=max_pixels, long_side=spec.long_side())
    image = data.image
    out = []
    for size in sorted(set(spec.sizes), reverse=True):
        # Each size from the previous (larger) one: Lanczos per halving-ish step keeps
        # quality and costs a fraction of resizing the original every time.
        image = image.copy() if max(image.size) <= size else _resize(image, size)
        out += [Rendition(size, f, *image.size, _encode(image, f, spec)) for f in spec.formats]
    return out


def _resize(img: Image.Image, size: int) -> Image.Image:
    scale = size / max(img.size)
    target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(img: Image.Image, fmt: str, spec: RenditionSpec) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        if img.mode == "RGBA":
            img = to_rgb(img)  # onto white, like the decoder
        img.save(out, format="JPEG", quality=spec.jpeg_quality, optimize=True, progressive=True)
    else:
        img.save(out, format="WEBP", quality=spec.webp_quality, method=4)
    # Nothing from the original's info (EXIF, XMP, ICC) is passed to save(): stripped.
    return out.getvalue()
