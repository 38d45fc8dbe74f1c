"""Near-duplicate edits of a photo, for sample batches, tests and the grouping benchmark."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageOps


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img: Image.Image, fraction: float) -> Image.Image:
    dx, dy = int(img.width * fraction), int(img.height * fraction)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def _watermark(img: Image.Image) -> Image.Image:
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    draw.text((img.width // 10, img.height - img.height // 8), "(c) shop", fill=(255, 255, 255))
    return out


#: name -> edit; each keeps the photo recognisably the same photo.
EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resized": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "recompressed": lambda im: _jpeg(im, 25),
    "cropped": lambda im: _crop(im, 0.06),
    "brightened": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "flipped": ImageOps.mirror,
    "rotated90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "padded": lambda im: ImageOps.expand(im, border=im.width // 8, fill=(255, 255, 255)),
    "watermarked": _watermark,
}
