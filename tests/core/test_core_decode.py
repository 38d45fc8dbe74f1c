"""photogroup.decode: sniffing, rejections with their reason codes, normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photogroup import Decoded, Rejection, decode_image, sniff_content_type
from photogroup.decode import WORK_SIZE
from photogroup.samples import load_photo


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def rejection_reason(data: bytes, **kwargs) -> str:
    with pytest.raises(Rejection) as info:
        decode_image(data, **kwargs)
    return info.value.reason


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return load_photo("astronaut")


# --- sniffing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("TIFF", "image/tiff"),
        ("BMP", "image/bmp"),
    ],
)
def test_sniff_content_type_of_pillow_output(astronaut, fmt, expected):
    data = encode(astronaut.resize((64, 48)), fmt)
    assert sniff_content_type(data) == expected


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world\n", b"<html><body>photo.jpg</body></html>", b"%PDF-1.7\n%\xe2\xe3"],
)
def test_sniff_content_type_of_non_images_is_none(data):
    assert sniff_content_type(data) is None


def test_sniff_recognises_heic_and_avif_brands():
    assert sniff_content_type(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "image/heic"
    assert sniff_content_type(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") == "image/avif"


def test_generic_heif_brand_is_told_by_its_compatible_brands(astronaut):
    """A file whose major brand is the generic "mif1" is AVIF or HEIC by its compatible
    brands; either way it decodes (Pillow's AVIF plugin is tried before pillow-heif)."""
    for fmt, content_type in (("AVIF", "image/avif"), ("HEIF", "image/heic")):
        data = bytearray(encode(astronaut.resize((64, 48)), fmt))
        data[8:12] = b"mif1"
        assert sniff_content_type(bytes(data)) == content_type
        assert decode_image(bytes(data)).content_type == content_type


@pytest.mark.parametrize(
    "data", [b"\xff\x0a\xfa\x7f" + bytes(60), b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(60)]
)
def test_sniff_recognises_jpeg_xl_codestream_and_container(data):
    assert sniff_content_type(data) == "image/jxl"


# --- rejections -------------------------------------------------------------------------


def test_empty_bytes_are_rejected_as_empty_file():
    assert rejection_reason(b"") == "empty_file"


@pytest.mark.parametrize("text", [b"just some text", b"name,price\nmug,4.99\n", b"GIF is a word"])
def test_text_is_rejected_as_not_an_image(text):
    assert rejection_reason(text) == "not_an_image"


def test_truncated_jpeg_is_rejected_as_corrupt(astronaut):
    data = encode(astronaut, "JPEG", quality=90)
    assert rejection_reason(data[: len(data) // 2]) == "corrupt_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_file_of_any_format_is_rejected_as_corrupt(astronaut, fmt, fraction):
    data = encode(astronaut, fmt)
    assert rejection_reason(data[: int(len(data) * fraction)]) == "corrupt_image"


def test_header_with_too_many_pixels_is_rejected_before_decoding():
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    assert len(data) < 100_000  # tiny file, huge declared size
    assert rejection_reason(data, max_pixels=1_000_000) == "too_many_pixels"
    assert decode_image(data, max_pixels=9_000_000).width == 3000  # the cap is inclusive


def test_file_over_max_bytes_is_rejected(astronaut):
    data = encode(astronaut, "PNG")
    assert rejection_reason(data, max_bytes=len(data) - 1) == "file_too_large"
    assert isinstance(decode_image(data, max_bytes=len(data)), Decoded)


def test_a_format_named_by_its_bytes_but_not_decoded_here_is_unsupported():
    assert rejection_reason(b"\xff\x0a\xfa\x7f" + bytes(60)) == "unsupported_format"  # JPEG XL


def test_a_dng_raw_photo_is_unsupported_not_its_preview():
    """A DNG is a TIFF whose first image is a small preview: decoded as a TIFF, the raw
    photo would be grouped from a thumbnail. It is rejected, saying why."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[50706] = b"\x01\x04\x00\x00"  # DNGVersion 1.4
    tags.tagtype[50706] = 1  # BYTE
    preview = Image.new("RGB", (256, 192), (10, 200, 30))
    dng = encode(preview, "TIFF", tiffinfo=tags)
    assert sniff_content_type(dng) == "image/tiff"
    with pytest.raises(Rejection) as info:
        decode_image(dng)
    assert info.value.reason == "unsupported_format" and "DNG" in str(info.value)
    assert decode_image(encode(preview, "TIFF")).width == 256  # a plain TIFF decodes


def test_damaged_heic_is_corrupt_not_unsupported():
    """HEIC is decoded here (pillow-heif): bytes behind its brand that libheif cannot
    parse are a damaged file."""
    assert rejection_reason(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64) == "corrupt_image"


def test_heic_is_decoded_upright_like_its_jpeg(astronaut):
    """An iPhone stores the photo as the sensor saw it with a rotation: the decoded HEIC is
    the upright photo, with the size and pixels of the same photo as a JPEG."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    stored = astronaut.transpose(Image.Transpose.ROTATE_90)
    heic = encode(stored, "HEIF", quality=95, exif=exif.tobytes())
    assert sniff_content_type(heic) == "image/heic"
    decoded = decode_image(heic, work_size=max(astronaut.size))
    assert (decoded.content_type, decoded.width, decoded.height) == (
        "image/heic",
        *astronaut.size,
    )
    as_jpeg = decode_image(encode(astronaut, "JPEG", quality=95), work_size=max(astronaut.size))
    diff = np.abs(np.asarray(decoded.image, np.float32) - np.asarray(as_jpeg.image, np.float32))
    assert diff.mean() < 3.0


def test_rejection_carries_code_and_detail():
    with pytest.raises(Rejection) as info:
        decode_image(b"")
    assert info.value.reason == "empty_file"
    assert str(info.value).startswith("empty_file")


# --- normalisation ----------------------------------------------------------------------


def test_plain_jpeg_decodes_to_rgb_working_copy(astronaut):
    decoded = decode_image(encode(astronaut, "JPEG", quality=95))
    assert decoded.content_type == "image/jpeg"
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height, decoded.frames) == (512, 512, 1)
    diff = np.abs(np.asarray(decoded.image, float) - np.asarray(astronaut, float))
    assert diff.mean() < 4


def test_sixteen_bit_png_is_scaled_not_clipped(astronaut):
    grey = astronaut.convert("L")
    wide = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    decoded = decode_image(encode(wide, "PNG"))
    out = np.asarray(decoded.image.convert("L"), float)
    assert out.mean() < 200  # a clipping convert() would give an all-white image
    assert np.abs(out - np.asarray(grey, float)).mean() < 1.0


def test_transparency_is_flattened_onto_white():
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[:, 30:60] = (255, 0, 0, 255)  # opaque red band
    rgba[:, 60:] = (0, 0, 0, 128)  # half-transparent black
    decoded = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    img = decoded.image
    assert img.mode == "RGB"
    assert img.getpixel((10, 30)) == (255, 255, 255)  # fully transparent -> white
    assert img.getpixel((45, 30)) == (255, 0, 0)
    assert all(abs(c - 127) <= 2 for c in img.getpixel((75, 30)))


def test_cmyk_jpeg_decodes_to_rgb(astronaut):
    data = encode(astronaut.convert("CMYK"), "JPEG", quality=95)
    decoded = decode_image(data)
    assert decoded.image.mode == "RGB"
    diff = np.abs(np.asarray(decoded.image, float) - np.asarray(astronaut, float))
    assert diff.mean() < 8


def test_exif_orientation_is_applied():
    # Top half red, bottom half blue, 200 wide x 100 high; orientation 6 means
    # "rotate 90 degrees clockwise to display", so the red top ends on the right.
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:50] = (255, 0, 0)
    arr[50:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif))
    assert (decoded.width, decoded.height) == (100, 200)
    assert decoded.image.size == (100, 200)
    right = decoded.image.getpixel((90, 100))
    left = decoded.image.getpixel((10, 100))
    assert right[0] > 200 and right[2] < 50
    assert left[2] > 200 and left[0] < 50


def test_large_oriented_jpeg_reports_original_oriented_size():
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(Image.new("RGB", (2000, 1000), (10, 120, 200)), "JPEG", exif=exif)
    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (1000, 2000)  # not the DCT-draft size
    width, height = decoded.image.size
    assert height == 2 * width  # turned upright, aspect kept
    # Decoded at reduced scale: the long side keeps at least 3/4 of the working size.
    assert 3 * WORK_SIZE // 4 <= height <= WORK_SIZE


def test_draft_decoding_is_only_used_on_large_jpegs():
    small = decode_image(encode(Image.new("RGB", (600, 400), (10, 120, 200)), "JPEG"))
    assert small.image.size == (WORK_SIZE, WORK_SIZE * 2 // 3)  # plain resize, no 1/2 draft


def test_animated_gif_gives_first_frame_and_frame_count():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (50, 40), c) for c in colours]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = decode_image(data)
    assert decoded.content_type == "image/gif"
    assert decoded.frames == 3
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((25, 20)) == (255, 0, 0)


@pytest.mark.parametrize(("size", "fmt"), [((1200, 800), "PNG"), ((700, 1500), "JPEG")])
def test_working_copy_long_side_is_at_most_work_size(astronaut, size, fmt):
    decoded = decode_image(encode(astronaut.resize(size), fmt))
    assert max(decoded.image.size) == WORK_SIZE
    assert (decoded.width, decoded.height) == size
    aspect = decoded.image.width / decoded.image.height
    assert aspect == pytest.approx(size[0] / size[1], rel=0.01)


def test_small_images_are_not_upscaled():
    decoded = decode_image(encode(Image.new("RGB", (40, 30), (1, 2, 3)), "PNG"))
    assert decoded.image.size == (40, 30)
    assert decoded.image.getpixel((0, 0)) == (1, 2, 3)


def test_work_size_parameter_is_honoured(astronaut):
    decoded = decode_image(encode(astronaut, "PNG"), work_size=100)
    assert decoded.image.size == (100, 100)
