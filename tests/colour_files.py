"""Test files for the colour pipeline: a wide-gamut ICC profile written byte by byte (no
.icc file is needed) and a palette PNG whose colour key hides the photo's black."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms

D50 = (0.9642, 1.0, 0.8249)
D65_XY = (0.3127, 0.3290)
#: Adobe RGB (1998): its primaries, D65 white and a pure gamma of 563/256.
ADOBE_RGB = {"primaries": ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)), "gamma": 563 / 256}
#: Display P3 (what phones embed): DCI-P3 primaries, D65 white; its tone curve is sRGB's,
#: approximated here by a pure gamma of 2.2 (the file and its profile agree either way).
DISPLAY_P3 = {"primaries": ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), "gamma": 2.2}


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _colorants(primaries) -> np.ndarray:
    """RGB -> XYZ (D50, Bradford-adapted from D65): the columns are rXYZ, gXYZ, bXYZ."""
    p = np.column_stack([_xyz(*xy) for xy in primaries])
    white = _xyz(*D65_XY)
    m = p * np.linalg.solve(p, white)
    bradford = np.array(
        [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
    )
    gain = (bradford @ np.array(D50)) / (bradford @ white)
    return np.linalg.inv(bradford) @ np.diag(gain) @ bradford @ m


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def matrix_trc_profile(primaries, gamma: float, name: str = "test RGB") -> bytes:
    """A minimal ICC v2 RGB display profile (matrix/TRC), as cameras and phones embed."""
    text = name.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    m = _colorants(primaries)
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0no copyright\0"),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(m[:, 0])),
        (b"gXYZ", _xyz_tag(m[:, 1])),
        (b"bXYZ", _xyz_tag(m[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)  # tags start on 4-byte boundaries
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8 + 4)  # platform, flags, maker, model, attributes, intent
        + b"".join(_s15(v) for v in D50)
        + bytes(4 + 16 + 28)  # creator, profile id, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def palette_with_black_keyed(photo: Image.Image) -> tuple[Image.Image, bytes]:
    """A palette PNG of ``photo`` whose fully transparent index is its black, which the
    photo uses in its dark areas (a converter's colour key); and the photo as shown
    without the key."""
    dark = np.asarray(photo.convert("L")) < 48
    pixels = np.asarray(photo).copy()
    pixels[dark] = 0
    blackened = Image.fromarray(pixels)
    quantised = blackened.quantize(255)
    index = np.asarray(quantised).copy()
    index[dark] = 255
    out = Image.fromarray(index, "P")
    out.putpalette([*quantised.getpalette()[: 255 * 3], 0, 0, 0])
    return blackened, encode(out, "PNG", transparency=255)


def adobe_rgb_jpeg(photo: Image.Image, *, tagged: bool = True) -> bytes:
    """``photo`` (sRGB) converted to Adobe RGB, saved with its profile (or without it)."""
    return wide_gamut_file(photo, ADOBE_RGB, tagged=tagged)


def wide_gamut_file(
    photo: Image.Image, space: dict, *, tagged: bool = True, fmt: str = "JPEG", **kwargs
) -> bytes:
    """``photo`` (sRGB) converted to ``space`` (ADOBE_RGB, DISPLAY_P3), saved with its
    profile (or without it) as a JPEG, or in ``fmt`` (``"HEIF"``: as an iPhone saves)."""
    profile = matrix_trc_profile(**space)
    wide = ImageCms.profileToProfile(
        photo,
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        outputMode="RGB",
    )
    wide.info.pop("icc_profile", None)  # profileToProfile sets it; some encoders save it
    return encode(wide, fmt, quality=95, **({"icc_profile": profile} if tagged else {}), **kwargs)
