"""A contact sheet: one row of thumbnails per group, so a person can check the grouping."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

THUMB = 96  # px, long side of a thumbnail
PAD = 6
LABEL_WIDTH = 190


def contact_sheet(
    rows: Sequence[tuple[str, Sequence[Image.Image]]],
    per_row: int = 8,
    sizes: Sequence[int] | None = None,
) -> Image.Image:
    """Lay out ``(label, images)`` rows; a row shows at most ``per_row`` thumbnails and
    says how many more the group has: ``sizes`` (one per row) when the rows carry only
    the images drawn, else the length of each row's images. Returns an RGB image (white
    background)."""
    height = PAD + max(1, len(rows)) * (THUMB + PAD)
    width = LABEL_WIDTH + per_row * (THUMB + PAD) + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, images) in enumerate(rows):
        top = PAD + index * (THUMB + PAD)
        size = sizes[index] if sizes is not None else len(images)
        extra = f"\n+{size - per_row} more" if size > per_row else ""
        draw.text((PAD, top + 4), f"{label}\n{size} images{extra}", fill=(40, 40, 40))
        for column, image in enumerate(images[:per_row]):
            thumb = image.convert("RGB")
            thumb.thumbnail((THUMB, THUMB))
            left = LABEL_WIDTH + column * (THUMB + PAD)
            sheet.paste(
                thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2)
            )
        draw.line((0, top + THUMB + PAD // 2, width, top + THUMB + PAD // 2), fill=(225, 225, 225))
    return sheet


def tile_sheet(tiles: Sequence[tuple[str, Image.Image]], per_row: int = 6) -> Image.Image:
    """A grid of captioned thumbnails, e.g. one cover per group. RGB, white background."""
    caption = 28  # two short lines of Pillow's default font
    cell_w, cell_h = THUMB + 2 * PAD, THUMB + caption + 2 * PAD
    rows = max(1, -(-len(tiles) // per_row))
    sheet = Image.new("RGB", (min(len(tiles), per_row) * cell_w or cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(tiles):
        left, top = (index % per_row) * cell_w + PAD, (index // per_row) * cell_h + PAD
        thumb = image.convert("RGB")
        thumb.thumbnail((THUMB, THUMB))
        sheet.paste(thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2))
        draw.text((left, top + THUMB + 2), label[:32], fill=(40, 40, 40))
    return sheet
