"""Sniff, validate and normalise uploaded image bytes.

Every upload ends as either a :class:`Decoded` image or a :class:`Rejection` with a
specific reason code. Normalisation is what makes odd encodings group with their
originals: EXIF orientation applied, 16-bit samples scaled (not clipped) to 8 bits,
embedded ICC profiles converted to sRGB (as renditions are: :func:`to_srgb` is shared),
transparency flattened onto white, CMYK converted, the first frame of an animation.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

# HEIC/HEIF, what iPhones shoot by default. libheif applies the file's rotation and mirror
# itself and pillow-heif resets the EXIF orientation to 1, so exif_transpose below does not
# turn it twice; an embedded ICC profile reaches info["icc_profile"] like a JPEG's.
# Registered after Pillow's own plugins: a file of the generic brand "mif1" is tried as
# AVIF first (this libheif has no AV1 decoder), and as HEIC when it is not one.
Image.init()
register_heif_opener(thumbnails=False)

#: Long side, in pixels, of the working copy every later stage reads. Perceptual hashes
#: work at 8-32 px and the embedder at 64 px, so 512 px loses nothing they use.
WORK_SIZE = 512
#: Default cap on decoded pixels (width x height); Pillow's own default is ~89 MP.
DEFAULT_MAX_PIXELS = 64_000_000
#: Default cap on the size of one upload.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

#: Formats always decoded here (HEIC through pillow-heif); AVIF depends on Pillow's build.
_ALWAYS_DECODABLE = {
    "image/heic",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/tiff",
    "image/bmp",
}
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}

#: What Pillow raises on malformed bytes once a plugin has accepted the file. Besides the
#: usual OSError/ValueError/SyntaxError/EOFError, plugins let parse errors escape that
#: ``Image.open`` only converts while opening: an animated GIF cut off after its first frame
#: raises IndexError or struct.error from ``n_frames``, a TIFF whose later IFD lacks its
#: dimensions raises TypeError. Pillow's AVIF plugin reports libavif decode failures (e.g.
#: damaged coded data) as RuntimeError, when opening or loading. Without these they ended
#: as ``decoder_error`` instead of ``corrupt_image``.
_MALFORMED = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    RuntimeError,
)


class Rejection(Exception):
    """An upload that is not a usable image; ``reason`` is a stable code, ``detail`` prose."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class Upload:
    """An upload decoded once, for every use of its pixels (working copy, renditions)."""

    image: Image.Image  # 8-bit sRGB, EXIF-oriented; "RGBA" when it has real transparency
    content_type: str  # sniffed from the bytes
    width: int  # of the original, after EXIF orientation
    height: int
    frames: int

    def work_copy(self, work_size: int = WORK_SIZE) -> Image.Image:
        """The RGB working copy: alpha flattened onto white, long side <= ``work_size``."""
        rgb = to_rgb(self.image)
        rgb = rgb.copy() if rgb is self.image else rgb  # thumbnail() works in place
        rgb.thumbnail((work_size, work_size), Image.Resampling.LANCZOS)
        return rgb


@dataclass(frozen=True)
class Decoded:
    """A validated image: its RGB working copy plus facts about the original."""

    image: Image.Image  # RGB, long side <= WORK_SIZE
    content_type: str  # sniffed from the bytes
    width: int  # of the original, after EXIF orientation
    height: int
    frames: int


def sniff_content_type(data: bytes) -> str | None:
    """Return the MIME type named by the file's magic bytes, or None if unknown."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:2] == b"BM":
        return "image/bmp"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "image/jxl"  # JPEG XL: no decoder here, rejected as unsupported_format
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"mif1", b"msf1"):  # generic HEIF: the compatible brands say which
            size = min(int.from_bytes(data[:4], "big"), 256)
            compatible = {data[i : i + 4] for i in range(16, size - 3, 4)}
            brand = b"avif" if compatible & {b"avif", b"avis"} else b"heic"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx"):
            return "image/heic"
    return None


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    work_size: int = WORK_SIZE,
) -> Decoded:
    """Validate ``data`` fully and return its normalised RGB working copy
    (:func:`decode_upload` at the working size).

    Raises:
        Rejection: as :func:`decode_upload`.
    """
    upload = decode_upload(
        data, max_pixels=max_pixels, max_bytes=max_bytes, long_side=3 * work_size // 4
    )
    work = upload.work_copy(work_size)
    return Decoded(work, upload.content_type, upload.width, upload.height, upload.frames)


def decode_upload(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    long_side: int = 3 * WORK_SIZE // 4,
) -> Upload:
    """The one decoder of uploads: validate ``data`` fully and return its pixels through
    the one colour pipeline (:func:`to_srgb`, alpha kept), at least ``long_side`` pixels on
    the long side when the original has them (a JPEG is decoded at the smallest DCT scale
    that keeps them: a 12 MP photo at 1/8 for the working copy, at 1/2 for renditions).

    Raises:
        Rejection: with reason ``empty_file``, ``file_too_large``, ``not_an_image``,
            ``unsupported_format``, ``too_many_pixels`` or ``corrupt_image``.
    """
    if not data:
        raise Rejection("empty_file", "the object has no bytes")
    if len(data) > max_bytes:
        raise Rejection("file_too_large", f"{len(data)} bytes > limit of {max_bytes}")
    content_type = sniff_content_type(data)
    if content_type is None:
        raise Rejection("not_an_image", "the bytes match no known image format")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; we check pixels ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if content_type in _ALWAYS_DECODABLE:  # Pillow reads these: the bytes are damaged
            raise Rejection("corrupt_image", f"{content_type} header cannot be parsed") from exc
        raise Rejection("unsupported_format", f"{content_type} cannot be decoded here") from exc
    except Image.DecompressionBombError as exc:
        raise Rejection("too_many_pixels", str(exc)) from exc
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:  # RuntimeError: AVIF
        raise Rejection("corrupt_image", str(exc)) from exc
    return _load(img, content_type, max_pixels, long_side)


#: TIFF tag naming a DNG raw photo. Pillow decodes only a TIFF's first image, which in a DNG
#: (a camera's or an iPhone's ProRAW) is a small preview, not the photo.
_DNG_VERSION = 50706


def _load(img: Image.Image, content_type: str, max_pixels: int, long_side: int) -> Upload:
    if img.format == "TIFF" and _DNG_VERSION in getattr(img, "tag_v2", {}):
        raise Rejection("unsupported_format", "a DNG raw photo: only its small preview could "
                        "be decoded here; upload a JPEG or HEIC export")  # fmt: skip
    width, height = img.size
    if width * height > max_pixels:
        raise Rejection("too_many_pixels", f"{width}x{height} > limit of {max_pixels} pixels")
    try:
        # Inside the guard: for PNG, getexif() decodes the file looking for an eXIf chunk.
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in _SWAPS_AXES:
            width, height = height, width
        frames = getattr(img, "n_frames", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if img.format == "JPEG":
                # DCT-domain downscaling at 1/2..1/8 scale, as small as keeps ``long_side``:
                # a 12 MP phone photo decodes at 1/8 (~3x faster than in full) to 504 x 378
                # for the working copy, enough for every feature.
                scale = _draft_scale(max(img.size), long_side)
                img.draft(img.mode, (img.width // scale, img.height // scale))
            img.load()
            profile = img.info.get("icc_profile")
            img = ImageOps.exif_transpose(img) or img
        rgb = to_srgb(img, profile, keep_alpha=True)
    except Image.DecompressionBombError as exc:
        raise Rejection("too_many_pixels", str(exc)) from exc
    except _MALFORMED as exc:
        raise Rejection("corrupt_image", str(exc)) from exc
    return Upload(rgb, content_type, width, height, frames)


def _draft_scale(long_side: int, min_long_side: int) -> int:
    """Largest JPEG reduction (1, 2, 4 or 8) that keeps ``min_long_side`` pixels."""
    return max(s for s in (1, 2, 4, 8) if s == 1 or long_side // s >= min_long_side)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, without colour management: :func:`to_srgb` without a profile (alpha
    flattened onto white)."""
    return to_srgb(img, None)


def to_srgb(
    img: Image.Image, profile: bytes | None = None, *, keep_alpha: bool = False
) -> Image.Image:
    """The one colour pipeline of every decoded upload (:func:`decode_upload`).

    8-bit sRGB ("RGB", or "RGBA" with ``keep_alpha`` when the image has transparency):
    16-bit and 32-bit samples are scaled by their nominal range (a plain ``convert`` clips
    them, turning a 16-bit photo white); an embedded ICC ``profile`` (Display P3, Adobe RGB,
    CMYK...) is converted to sRGB, so features are computed on the colours customers see;
    alpha is composited onto white unless kept. A broken profile is ignored.
    """
    img = _to_8_bit(img)
    if _colour_key_hides_content(img):
        img = img.convert("RGB")  # the key's own colour: what the photo had there
        img.info.pop("transparency", None)  # convert() carries the key over as a colour
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "La", "RGBa") or (
        img.mode in ("L", "RGB") and "transparency" in img.info
    ):
        img = img.convert("RGBA")
    if img.mode not in ("RGB", "RGBA", "CMYK", "L"):
        img = img.convert("RGB")
    if profile:
        img = _profile_to_srgb(img, profile)
    if img.mode == "RGBA":
        if keep_alpha:
            return img
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img


def _to_8_bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / scale) + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / scale) + 0.5, 0, 255).astype(np.uint8))
    return img


def _colour_key_hides_content(img: Image.Image) -> bool:
    """Whether a colour key (one palette index or one colour made fully transparent, as
    GIF and palette PNG do) hides pixels of the photo rather than a background.

    A cut-out's key covers its background, so most of the border: flattened onto white it
    matches the same product shot on white. A converter that keyed a colour the photo
    itself uses (black, typically) hides pixels all over the image and little of the
    border: flattened onto white, dark areas turn white and the file lands outside its
    photo's group, while the pixels under the key still hold the photo's colour. So a key
    that leaves most of the border visible is dropped. Graded alpha is never a key.
    """
    if img.mode not in ("P", "L", "RGB") or "transparency" not in img.info:
        return False
    alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    if not np.isin(alpha, (0, 255)).all():
        return False  # a palette with graded alpha (e.g. quantised RGBA): real transparency
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    return bool((border == 0).mean() < 0.5)


def _profile_to_srgb(img: Image.Image, profile: bytes) -> Image.Image:
    out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
    try:
        return ImageCms.applyTransform(img, _transform_to_srgb(profile, img.mode, out_mode))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # broken, or not for this mode (a CMYK profile on RGB pixels)


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(profile: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform:
    """Built once per profile: a phone embeds the same few profiles in every photo."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.buildTransform(source, _SRGB, in_mode, out_mode)


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def encode_work_image(img: Image.Image) -> bytes:
    """Lossless WebP of a working copy: what later stages read instead of the original.

    WebP's lossless mode at its fastest effort encodes a 512 px copy in half the time of
    PNG at zlib level 1 (6 vs 12 ms), decodes it faster (3.4 vs 5 ms) and is smaller (227
    vs 294 KB, phone photos): the working copy is written once and read by every stage.
    Copies stored as PNG before still open (:func:`open_work_image` reads either), with
    the same pixels, so the working copy's version did not change."""
    out = io.BytesIO()
    img.save(out, format="WEBP", lossless=True, quality=0, method=0)
    return out.getvalue()


def open_work_image(data: bytes) -> Image.Image:
    """Inverse of :func:`encode_work_image`."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")
