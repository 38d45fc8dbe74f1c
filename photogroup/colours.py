"""Named colours for shop facets: the nearest of a small palette in CIELAB.

A shop filters by "red" or "navy", not by ``#9c2b2f``. Distances are taken in CIELAB
(D65), where equal steps look roughly equally different, so dark red lands on "red" rather
than on "brown" as it can in RGB.
"""

from __future__ import annotations

import numpy as np

#: The colour names shops use most, with a representative sRGB value each.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "white": (245, 245, 245),
    "red": (200, 30, 40),
    "orange": (240, 130, 30),
    "yellow": (240, 220, 50),
    "green": (40, 150, 60),
    "teal": (0, 128, 128),
    "blue": (40, 80, 200),
    "navy": (20, 30, 90),
    "purple": (120, 50, 150),
    "pink": (240, 150, 180),
    "brown": (120, 75, 40),
    "beige": (220, 200, 160),
}


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``... x 3`` sRGB in 0..255 to CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ np.array(
        [[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]]
    )
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


_NAMES = list(PALETTE)
_LAB = srgb_to_lab(np.array(list(PALETTE.values())))


def colour_name(hex_colour: str) -> str:
    """Nearest palette name of ``#rrggbb``; empty for an empty or malformed value."""
    value = (hex_colour or "").lstrip("#")
    if len(value) != 6:
        return ""
    try:
        rgb = np.array([int(value[i : i + 2], 16) for i in (0, 2, 4)])
    except ValueError:
        return ""
    return _NAMES[int(np.argmin(np.linalg.norm(_LAB - srgb_to_lab(rgb), axis=1)))]
