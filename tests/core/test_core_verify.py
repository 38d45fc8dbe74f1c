"""Geometric verification tells an edited copy from another photo; colour names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from photogroup.cluster import GroupingParams, group_images
from photogroup.colours import colour_name
from photogroup.decode import decode_image
from photogroup.embed import LocalEmbedder
from photogroup.features import compute_features, local_features
from photogroup.samples import load_photo
from photogroup.verify import (
    CHROMA_THUMB,
    THUMB,
    Keypoints,
    chromaticity,
    content_box,
    match_photos,
    orb_keypoints,
    padding_frame,
)

#: Aligned edited copies agree on nearly every textured block, different photos on few;
#: where between the two a pair links is GroupingParams.min_agreement, calibrated in bench/.
EDITED = 0.85
CHANCE = 0.5


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    out = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = load_photo(name)
        img.thumbnail((512, 512))
        out[name] = img
    return out


def work_copy(img: Image.Image) -> Image.Image:
    """As the pipeline sees an upload: its working copy, at most 512 px a side."""
    out = img.copy()
    out.thumbnail((512, 512), Image.Resampling.LANCZOS)
    return out


def crop(img: Image.Image, fraction: float) -> Image.Image:
    dx, dy = int(img.width * fraction), int(img.height * fraction)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


@pytest.mark.parametrize(
    "edit",
    [
        lambda im: crop(im, 0.15),
        lambda im: ImageOps.mirror(crop(im, 0.12)),
        lambda im: im.rotate(6, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)),
        lambda im: im.resize((int(im.width * 1.35), im.height)),
        lambda im: crop(im, 0.1).transpose(Image.Transpose.ROTATE_90),
    ],
    ids=["crop", "mirrored-crop", "small-rotation", "stretch", "crop-quarter-turn"],
)
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_edited_copies_verify(photos, name, edit):
    original = orb_keypoints(photos[name])
    match = match_photos(original, orb_keypoints(work_copy(edit(photos[name]))))
    assert match is not None and match.method == "keypoints"
    assert match.agreement >= EDITED and match.overlap >= 0.6


@pytest.mark.parametrize("a,b", [("astronaut", "coffee"), ("chelsea", "rocket")])
def test_different_photos_do_not_verify(photos, a, b):
    match = match_photos(orb_keypoints(photos[a]), orb_keypoints(photos[b]))
    assert match is None or match.agreement < CHANCE


def test_a_pair_without_an_alignment_is_aligned_once(photos, monkeypatch):
    """Aligning (two Hamming searches and MAGSAC) is most of a verification's cost: a pair
    for which align() found no homography is compared, and checked for a changed print,
    without being aligned again (it would find none again)."""
    import photogroup.changed_print as changed_print
    import photogroup.cluster as cluster
    import photogroup.verify as verify

    real, calls = verify.align, []

    def counted(a, b):
        calls.append((a, b))
        return real(a, b)

    for module in (verify, cluster, changed_print):
        monkeypatch.setattr(module, "align", counted)
    a, b = orb_keypoints(photos["astronaut"]), orb_keypoints(photos["coffee"])
    [verified] = cluster._verified([(a, b, None)], GroupingParams())
    assert len(calls) == 1 and verified.match is None and verified.test is None
    # With the hash's flip as a hint the pair is compared (and judged the other way round
    # too): each way aligned once.
    calls.clear()
    [hinted] = cluster._verified([(a, b, 0)], GroupingParams())
    assert hinted.match is not None and hinted.match.method == "hash"
    assert sorted((id(x), id(y)) for x, y in calls) == sorted({(id(a), id(b)), (id(b), id(a))})


def test_keypoints_round_trip_through_bytes_and_base64(photos):
    kp = local_features(photos["coffee"])
    back = Keypoints.from_bytes(kp.to_bytes())
    assert back.descriptors.tobytes() == kp.descriptors.tobytes()
    assert np.allclose(back.xy, kp.xy, atol=0.5)  # float16 coordinates
    assert back.diagonal == pytest.approx(kp.diagonal)
    assert back.thumb.tobytes() == kp.thumb.tobytes() and max(back.thumb.shape) == THUMB
    assert back.surface_descriptors.tobytes() == kp.surface_descriptors.tobytes()
    assert back.surface_lab.tobytes() == kp.surface_lab.tobytes()
    assert back.chroma.tobytes() == kp.chroma.tobytes() and max(back.chroma.shape) == CHROMA_THUMB
    assert len(back.surface_xy) > 50
    features = compute_features(photos["coffee"])
    assert Keypoints.from_base64(features.keypoints).descriptors.shape[1] == 32
    assert Keypoints.from_base64("") is None


def test_a_blank_image_has_no_keypoints_and_verifies_nothing(photos):
    blank = orb_keypoints(Image.new("RGB", (200, 200), (255, 255, 255)))
    assert len(blank.xy) == 0
    assert match_photos(blank, orb_keypoints(photos["coffee"])) is None


def test_verification_links_a_tight_crop(photos):
    original = photos["astronaut"]
    cropped = work_copy(crop(original, 0.12))
    images = [original, cropped, photos["coffee"]]
    feats = [compute_features(im) for im in images]
    emb = LocalEmbedder().embed(images)
    ids = [f"{i:x}" * 64 for i in range(1, 4)]
    d4 = [f.phash_d4 for f in feats]
    kps = [Keypoints.from_base64(f.keypoints) for f in feats]
    # Every pair a candidate; the hash-and-cosine rule off, so only verification can link.
    params = GroupingParams(cos_candidate=-1.0, hash_sure=0, hash_loose=0, cos_strict=1.1)
    without = {a.image_id: a.group_id for a in group_images(ids, d4, emb, params)}
    assert without[ids[0]] != without[ids[1]]
    with_kp = {a.image_id: a.group_id for a in group_images(ids, d4, emb, params, kps)}
    assert with_kp[ids[0]] == with_kp[ids[1]] != with_kp[ids[2]]


@pytest.mark.parametrize(
    "hex_colour,name",
    [("#c81e28", "red"), ("#8b0000", "red"), ("#1a1a1a", "black"), ("#fafafa", "white"),
     ("#2050c8", "blue"), ("#141e5a", "navy"), ("#808080", "grey"), ("#dcc8a0", "beige")],
)  # fmt: skip
def test_colour_names(hex_colour, name):
    assert colour_name(hex_colour) == name


@pytest.mark.parametrize("bad", ["", "#12", "zzzzzz", None])
def test_malformed_colours_have_no_name(bad):
    assert colour_name(bad) == ""


def test_groups_are_named_by_their_centres_colour():
    ids = [f"{i:x}" * 64 for i in range(1, 3)]
    d4 = [["0" * 16] * 8, ["f" * 16] * 8]
    out = group_images(ids, d4, np.eye(2, dtype=np.float32), colours=["#c81e28", "#2050c8"])
    assert [a.colour for a in out] == ["red", "blue"]


def test_a_half_size_copy_from_a_user_trial_joins_its_photo():
    """A 320 px copy of a 640 px photo, kept from a user trial where it stayed alone: most
    ORB matches fit one homography and 6 of the few left over fit another by chance (a
    homography needs 4). So few are not a second viewpoint, however small the first plane."""
    data = Path(__file__).resolve().parents[1] / "data"
    found = []
    for name in ("rocket.jpg", "rocket_320px.jpg"):
        work = decode_image((data / name).read_bytes()).image
        keypoints = Keypoints.from_base64(compute_features(work).keypoints)
        assert keypoints is not None
        found.append(keypoints)
    match = match_photos(*found)
    assert match is not None
    params = GroupingParams()
    # What the rule said before: a second plane over a tenth of the first's inliers.
    assert match.inliers * params.max_second_plane < match.second_plane <= params.min_second_plane
    assert params.copy_test(match) == "agreement"


def test_chromaticity_ignores_shading_and_marks_dark_pixels():
    """Another face of a pack in its own light keeps its chromaticity; dark pixels, whose
    ratios are noise, carry none (0, 0)."""
    lit = Image.new("RGB", (120, 60), (200, 100, 40))
    lit.paste((100, 50, 20), (60, 0, 120, 60))  # the same ink in shade
    lit.paste((10, 5, 2), (100, 0, 120, 60))  # nearly black
    rg = chromaticity(lit)
    assert max(rg.shape[:2]) == CHROMA_THUMB
    bright, shaded, dark = rg[10, 10], rg[10, 60], rg[10, -2]
    assert np.abs(bright.astype(int) - shaded.astype(int)).max() <= 1
    assert tuple(dark) == (0, 0) and bright[0] > bright[1] > 0


def test_ratio_matches_are_opencvs_brute_force_matches(photos):
    """The faiss search behind verification finds exactly the matches OpenCV's brute-force
    Hamming matcher finds (the ratio test on the two nearest descriptors)."""
    import cv2

    from photogroup.verify import _LOWE_RATIO, _ratio_matches

    a = orb_keypoints(photos["astronaut"]).descriptors
    b = orb_keypoints(ImageOps.mirror(photos["astronaut"]).rotate(8)).descriptors
    noise = np.random.default_rng(0).integers(0, 256, (300, 32), dtype=np.uint8)
    for query, train in ((b, a), (noise, a), (a, np.vstack([a[:50], a[:50]]))):
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query, train, k=2)
        good = [p[0] for p in pairs if p[0].distance < _LOWE_RATIO * p[1].distance]
        q, t = _ratio_matches(query, train)
        expected = [(m.queryIdx, m.trainIdx) for m in good]
        assert expected == list(zip(q.tolist(), t.tolist(), strict=True))
    assert len(_ratio_matches(a, a)[0]) == len(a)  # every descriptor is its own match


def test_a_degenerate_alignment_is_compared_at_one_scale():
    """An alignment that squashes b to a point (one pair of the evaluation set got one) has no
    scale to compare at: the plain agreement stands, and nothing raises (one odd pair
    must not fail a batch's grouping)."""
    from photogroup.verify import _coarse_agreement

    thumb = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    b_to_a = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 4.0], [0.0, 0.0, 1.0]])
    covered = np.ones(thumb.shape, bool)
    assert _coarse_agreement(thumb, thumb, b_to_a, thumb, covered, 0.42) == 0.42


def test_a_copy_at_a_third_of_the_size_is_compared_at_its_resolution():
    """A photo and its copy at a third of the size disagree at detail the copy lost;
    brought down to the copy's resolution (either way round) they agree."""
    import cv2

    from photogroup.verify import _coarse_agreement, block_agreement

    img = np.asarray(load_photo("rocket").convert("L").resize((255, 255)))
    third = np.asarray(Image.fromarray(img).resize((85, 85), Image.Resampling.BOX))
    up = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]])  # third -> photo
    warped = cv2.warpPerspective(third, up, (255, 255), flags=cv2.INTER_LINEAR)
    covered = np.ones(img.shape, bool)
    plain = block_agreement(img, warped, covered).agreement
    assert plain < GroupingParams().min_agreement
    assert _coarse_agreement(img, third, up, warped, covered, plain) > plain + 0.05
    down = np.linalg.inv(up)  # photo -> third: the photo is brought down before warping
    covered = np.ones(third.shape, bool)
    shrunk = cv2.warpPerspective(img, down, (85, 85), flags=cv2.INTER_LINEAR)
    plain = block_agreement(third, shrunk, covered).agreement
    assert _coarse_agreement(third, img, down, shrunk, covered, plain) > plain


def _jpeg_work(img: Image.Image) -> Image.Image:
    """An upload's working copy: JPEG bytes (ringing at a bar's edge), decoded."""
    import io

    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=92)
    return decode_image(out.getvalue()).image


@pytest.mark.parametrize("colour", [(128, 255, 0), (0, 0, 0), (255, 255, 255)])
@pytest.mark.parametrize("bars", ["pad", "letterbox", "pillarbox"])
def test_padding_frame_finds_the_photo_inside_bars(photos, colour, bars):
    photo = photos["chelsea"]
    w, h = photo.size
    margins = {"pad": (60, 45), "letterbox": (0, 90), "pillarbox": (120, 0)}[bars]
    canvas = Image.new("RGB", (w + 2 * margins[0], h + 2 * margins[1]), colour)
    canvas.paste(photo, margins)
    work = _jpeg_work(canvas)
    scale = work.width / canvas.width
    x0, y0, x1, y1 = padding_frame(work)
    expected = [v * scale for v in (margins[0], margins[1], margins[0] + w, margins[1] + h)]
    assert np.allclose((x0, y0, x1, y1), expected, atol=4)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
def test_padding_frame_leaves_unpadded_photos_and_studio_backdrops_whole(photos, name):
    """A product on a white backdrop has the corners' colour round it, but its edge is no
    straight line: not a bar."""
    work = _jpeg_work(photos[name])
    assert padding_frame(work) == (0, 0, *work.size)
    product = photos[name].resize((160, 120))
    studio = Image.new("RGB", (512, 384), (255, 255, 255))
    studio.paste(product.rotate(20, expand=True, fillcolor=(255, 255, 255)), (170, 120))
    work = _jpeg_work(studio)
    assert padding_frame(work) == (0, 0, *work.size)


def test_a_padded_studio_shot_keeps_its_photos_content_box_and_joins_it():
    """A product on a blurred photo, padded: the bars' edge is no detail, so the copy's
    content box is its photo's (before, it took the whole padded frame, and the copy's
    thumbnail, at another scale, agreed on 0.89 of its blocks: no copy)."""
    from bench import render_products as rp

    product = rp.make_product(7200, "box", ("skimage:coffee",))
    view = rp.View(azimuth_deg=10, elevation_deg=12)
    shot = rp.render(product, view, "blurred_photo", size=(800, 600), backdrop="skimage:chelsea")
    original = _jpeg_work(shot.image)
    box = content_box(original)
    assert box != (0, 0, *original.size)  # the product, not the whole frame
    for colour in ((128, 255, 0), (0, 0, 0), (255, 255, 255)):
        canvas = Image.new("RGB", (1064, 864), colour)
        canvas.paste(shot.image, (132, 132))
        padded = _jpeg_work(canvas)
        scale = padded.width / canvas.width
        mapped = [(v * 800 / original.width + 132) * scale for v in box]
        assert np.allclose(content_box(padded), mapped, atol=6)
        match = match_photos(orb_keypoints(original), orb_keypoints(padded))
        assert match is not None and GroupingParams().copy_test(match) is not None
