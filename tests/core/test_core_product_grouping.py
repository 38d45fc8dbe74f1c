"""Product grouping end to end from bytes: rendered products, a variant, shop edits and a real
stereo pair go JPEG bytes -> working copy -> features -> local embedding ->
group_with_evidence, as in the pipeline. (Figures over many products: bench/grouping.py.)"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from bench import render_products as rp
from bench import shop_edits
from photogroup import LocalEmbedder, compute_features, decode_image, views
from photogroup.changed_print import PrintChange
from photogroup.cluster import Grouping, GroupingParams, group_with_evidence
from photogroup.evidence import evidence_line
from photogroup.samples import load_stereo_pair
from photogroup.verify import Keypoints, block_agreement, match_photos
from photogroup.views import match_surfaces

SIZE = (640, 480)


def upload(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=92)
    return out.getvalue()


def group(
    named: dict[str, bytes], params: GroupingParams | None = None
) -> tuple[dict[str, tuple[str, str]], Grouping, dict]:
    """name -> (group id, product id), the grouping, and sha -> name."""
    works = [decode_image(data).image for data in named.values()]
    features = [compute_features(w) for w in works]
    ids = [hashlib.sha256(data).hexdigest() for data in named.values()]
    grouping = group_with_evidence(
        ids,
        [f.phash_d4 for f in features],
        LocalEmbedder().embed(works),
        params or GroupingParams(),
        keypoints=[Keypoints.from_base64(f.keypoints) for f in features],
    )
    by_id = {a.image_id: (a.group_id, a.product_id) for a in grouping.assignments}
    names = dict(zip(ids, named, strict=True))
    return {name: by_id[i] for i, name in zip(ids, named, strict=True)}, grouping, names


@pytest.fixture(scope="module")
def shop() -> tuple[dict, Grouping, dict]:
    """A box from three angles 25-30 degrees apart, its colour variant from two of them, a
    jar turned on its axis between three shots, and two shop edits of one box view."""
    sources = ("skimage:astronaut", "skimage:chelsea")
    box = rp.make_product(7001, "box", sources)
    variant = rp.make_variant(box, "colour", np.random.default_rng(3), sources)
    jar = rp.make_product(7002, "cylinder", sources)
    shots = {
        **{f"box-{a}": (box, rp.View(azimuth_deg=a, elevation_deg=15)) for a in (-25, 0, 30)},
        **{f"variant-{a}": (variant, rp.View(azimuth_deg=a, elevation_deg=14)) for a in (-20, 5)},
        **{f"jar-{s}": (jar, rp.View(spin_deg=s, elevation_deg=12)) for s in (0, 30, 60)},
    }
    images = {
        name: rp.render(p, v, "grey_sweep", size=SIZE).image for name, (p, v) in shots.items()
    }
    rng = np.random.default_rng(11)
    images["box-0-screenshot"] = shop_edits.screenshot(images["box-0"], rng)
    images["box-0-sticker"] = shop_edits.sticker(images["box-0"], rng)
    return group({name: upload(img) for name, img in images.items()})


#: Issue 17's acceptance point this code does not meet yet (bench/grouping.py has the
#: figures): product recall. Here the box's view at 30 degrees and the stickered copy of
#: its front read as a changed print from one angle (one homography holds for 20 % of
#: their keypoints, the sticker changed 2.1 % of the area), which keeps that view apart
#: from the front's group, and the jar turned by 30 degrees does too (one homography
#: holds for the label's middle strip, the rest of the curved label moved: 5-7 %
#: "changed"). Letting a same-photo member that compared unchanged undo the first, or the
#: print laid by the matches judge the second, fixed this batch but merged more variant
#: pairs on the calibration seeds (measured 2026-12-07, not taken). Strict: it starts
#: failing the day it passes, as a reminder.
NOT_MET = pytest.mark.xfail(strict=True, reason="issue 17: not met yet (bench/grouping.py)")


@NOT_MET
def test_views_of_one_product_form_one_product_and_its_colour_variant_another(shop):
    placed, _, _ = shop
    products = {name: product for name, (_, product) in placed.items()}
    assert len({products[f"box-{a}"] for a in (-25, 0, 30)}) == 1
    assert len({products[f"variant-{a}"] for a in (-20, 5)}) == 1
    assert len({products[f"jar-{s}"] for s in (0, 30, 60)}) == 1
    assert products["variant-5"] != products["box-0"]
    assert products["jar-0"] not in (products["box-0"], products["variant-5"])


def test_other_angles_never_share_a_strict_group(shop):
    placed, _, _ = shop
    views = [name for name in placed if name.count("-") == 1]
    assert len({placed[name][0] for name in views}) == len(views)


def _joins_with_same_photo_evidence(shop, copy: str) -> None:
    placed, grouping, names = shop
    assert placed[copy][0] == placed["box-0"][0]
    links = [e for e in grouping.group_links if copy in (names[e["a"]], names[e["b"]])]
    assert links and all(e["rule"] == "same_photo" for e in links)
    assert all(e["agreement"] >= 0.5 and e["overlap"] > 0 for e in links)


def test_a_screenshot_framed_copy_joins_its_photos_group(shop):
    _joins_with_same_photo_evidence(shop, "box-0-screenshot")


def test_a_stickered_copy_joins_its_photos_group(shop):
    _joins_with_same_photo_evidence(shop, "box-0-sticker")
    _, grouping, names = shop
    links = [e for e in grouping.group_links if "box-0-sticker" in (names[e["a"]], names[e["b"]])]
    # Its agreement is below the calibrated 0.9: the sticker is the one patch that differs.
    assert any(e["test"] == "one_patch_differs" and e["rest_agreement"] >= 0.97 for e in links)


@pytest.fixture(scope="module")
def twins() -> tuple[dict, Grouping, dict]:
    """A box's front and, a few degrees away, its flavour and artwork variants: each differs
    from it in one region, as a sticker does, but was shot from elsewhere."""
    sources = ("skimage:coffee", "skimage:rocket")
    box = rp.make_product(7101, "box", sources)
    rng = np.random.default_rng(4)
    shots = {
        "box": (box, rp.View(azimuth_deg=0, elevation_deg=15)),
        "flavour": (rp.make_variant(box, "flavour", rng, sources),
                    rp.View(azimuth_deg=4, elevation_deg=16, spin_deg=2)),
        "artwork": (rp.make_variant(box, "artwork", rng, sources),
                    rp.View(azimuth_deg=-3, elevation_deg=14)),
    }  # fmt: skip
    images = {n: rp.render(p, v, "white", size=SIZE).image for n, (p, v) in shots.items()}
    images["box-sticker"] = shop_edits.sticker(images["box"], np.random.default_rng(12))
    return group({name: upload(img) for name, img in images.items()})


def test_variants_a_few_degrees_away_are_not_copies(twins):
    placed, grouping, names = twins
    assert placed["box-sticker"][0] == placed["box"][0]
    assert placed["flavour"][0] != placed["box"][0]
    assert placed["artwork"][0] != placed["box"][0]
    linked = {frozenset((names[e["a"]], names[e["b"]])) for e in grouping.group_links}
    assert not any(pair & {"flavour", "artwork"} for pair in linked)


@functools.cache
def _can_twin_images() -> dict[str, Image.Image]:
    """A can's front, its flavour variant shot one degree away (90-99 % of its blocks agree
    once aligned, as an edited copy's do), and a stickered copy of the front."""
    sources = ("skimage:coffee", "skimage:rocket")
    can = rp.make_product(7102, "cylinder", sources)
    flavour = rp.make_variant(can, "flavour", np.random.default_rng(4), sources)
    images = {
        name: rp.render(product, rp.View(azimuth_deg=az, elevation_deg=15), "white",
                        size=SIZE).image
        for name, product, az in (("can", can, 0), ("flavour", flavour, 1))
    }  # fmt: skip
    images["can-sticker"] = shop_edits.sticker(images["can"], np.random.default_rng(12))
    return images


@pytest.fixture(scope="module")
def can_twins() -> tuple[dict, Grouping, dict]:
    return group({name: upload(img) for name, img in _can_twin_images().items()})


def test_a_flavour_variant_that_agrees_like_a_copy_is_not_one(can_twins):
    """Block agreement takes the variant for a copy; its changed print, on an alignment
    that holds only roughly (another shot), refuses it. The sticker changes one region too,
    on a copy one plane aligns exactly, and stays."""
    from photogroup.product_links import VARIANT_VERDICTS

    placed, grouping, names = can_twins
    photos = {name: _keypoints(img) for name, img in _can_twin_images().items()}
    params = GroupingParams()
    twin = match_photos(photos["can"], photos["flavour"])
    assert twin is not None and params.copy_test(twin) == "agreement"
    assert params.variant_twin(twin, photos["can"], photos["flavour"])
    assert placed["flavour"][0] != placed["can"][0]
    assert placed["can-sticker"][0] == placed["can"][0]
    sticker = match_photos(photos["can"], photos["can-sticker"])
    assert sticker is not None and not params.variant_twin(
        sticker, photos["can"], photos["can-sticker"]
    )
    verdicts = {c["verdict"] for c in grouping.product_checks
                if {names[c["a"]], names[c["b"]]} & {"flavour"}}  # fmt: skip
    assert verdicts & set(VARIANT_VERDICTS)
    assert placed["flavour"][1] != placed["can"][1]


@pytest.mark.parametrize(("seed", "shape"), [(7102, "cylinder"), (7001, "box")])
def test_a_copy_the_strict_level_missed_is_not_taken_for_another_design(seed, shape):
    """Blur makes blocks disagree at close correlation, as another design's print does; but
    no region of the print changed, so the product level joins the copy to its photo rather
    than keeping the two apart for good. (The strict level is made to miss the copy.)"""
    sources = ("skimage:coffee", "skimage:rocket")
    product = rp.make_product(seed, shape, sources)
    view = rp.View(azimuth_deg=10, elevation_deg=15)
    photo = rp.render(product, view, "white", size=SIZE).image
    named = {"photo": upload(photo), "copy": upload(photo.filter(ImageFilter.GaussianBlur(2.5)))}
    params = GroupingParams(
        min_agreement=0.99,
        min_coarse_agreement=1.01,
        min_soft_agreement=1.01,
        min_rest_agreement=1.01,
        min_resampled_agreement=1.01,
    )
    placed, grouping, _ = group(named, params)
    assert placed["photo"][0] != placed["copy"][0]
    assert placed["photo"][1] == placed["copy"][1]
    rules = params.product_rules()
    (check,) = grouping.product_checks
    assert check["verdict"] == "same_surface"
    assert check["aligned"]["fine_agreement"] < rules.min_fine_agreement
    assert not rules.print_moved(PrintChange(**check["print_change"]))


@pytest.mark.parametrize(("seed", "shape"), [(7102, "cylinder"), (7001, "box")])
def test_a_resampled_copy_joins_its_photo_where_blocks_agree_less(seed, shape):
    """A blurred copy whose blocks the agreement test is made to find too unlike: one plane
    holds for its keypoint matches to a fraction of a pixel and no region of its print
    changed, so it is the photo's copy. Without the resampled test it stays apart."""
    sources = ("skimage:coffee", "skimage:rocket")
    product = rp.make_product(seed, shape, sources)
    photo = rp.render(product, rp.View(azimuth_deg=10, elevation_deg=15), "white", size=SIZE)
    blurred = photo.image.filter(ImageFilter.GaussianBlur(1.5))
    named = {"photo": upload(photo.image), "copy": upload(blurred)}
    # (the other way round too: from the blurred copy's blocks it agrees)
    strict = {"min_agreement": 0.99, "min_coarse_agreement": 1.01, "min_rest_agreement": 1.01,
              "min_soft_agreement": 1.01, "min_reverse_agreement": 2.0}  # fmt: skip
    placed, grouping, _ = group(named, GroupingParams(**strict))
    assert placed["photo"][0] == placed["copy"][0]
    (link,) = grouping.group_links
    assert link["test"] == "resampled" and link["agreement"] < 0.99
    placed, _, _ = group(named, GroupingParams(**strict, min_resampled_agreement=1.01))
    assert placed["photo"][0] != placed["copy"][0]


def test_a_flavour_variant_is_no_resampled_copy():
    """The flavour variant agrees like a copy and fits one plane tightly; its changed
    flavour band keeps it from passing for a resampled copy too. Against a grayscale copy
    of the can no changed colour can show, which proves nothing either way."""
    from photogroup.changed_print import print_change

    images = _can_twin_images()
    photos = {name: _keypoints(img) for name, img in images.items()}
    photos["grey can"] = _keypoints(images["can"].convert("L").convert("RGB"))
    params = GroupingParams()
    for base in ("can", "grey can"):
        twin = match_photos(photos[base], photos["flavour"])
        assert twin is not None and twin.agreement >= params.min_resampled_agreement
        assert twin.residual <= params.max_resampled_residual
        assert not params.resampled_copy(twin, photos[base], photos["flavour"])
    grey = print_change(photos["grey can"], photos["flavour"])
    assert grey is not None and grey.blind and grey.changed_area == 0


def test_the_variant_is_kept_apart_with_a_reason(shop):
    placed, grouping, names = shop
    box_products = {placed[f"box-{a}"][1] for a in (-25, 0, 30)}
    crossing = [
        c for c in grouping.product_checks
        if {names[c["a"]].split("-")[0], names[c["b"]].split("-")[0]} == {"box", "variant"}
    ]  # fmt: skip
    assert crossing, "the variant was never compared with its base"
    assert any(c["verdict"] in ("colour_differs", "artwork_differs") for c in crossing)
    assert placed["variant-5"][1] not in box_products


def test_product_links_name_their_rule_and_numbers(shop):
    _, grouping, names = shop
    assert grouping.product_links
    for link in grouping.product_links:
        assert link["rule"] == "same_surface"
        assert link["inliers"] > 0 and 0 < link["matched_area"] <= 1
        assert "colour_difference" in link
        assert names[link["a"]].split("-")[0] == names[link["b"]].split("-")[0]


def test_a_stereo_pair_shares_a_product_but_not_a_strict_group():
    left, right = load_stereo_pair()
    placed, grouping, _ = group({"left": upload(left), "right": upload(right)})
    assert placed["left"][0] != placed["right"][0]
    assert placed["left"][1] == placed["right"][1]
    assert [link["rule"] for link in grouping.product_links] == ["same_surface"]


def _keypoints(img: Image.Image) -> Keypoints:
    found = Keypoints.from_base64(compute_features(decode_image(upload(img)).image).keypoints)
    assert found is not None
    return found


@pytest.mark.parametrize("shape", ["box", "cylinder"])
def test_a_colour_variant_turns_hues_over_the_matched_surface(shape):
    """The variant keeps its print (text, illustration), where the keypoints sit, and
    changes the ground colour around it: the hue turn over the matched region shows it
    where the colour at the keypoints may not, and lighting another face does not."""
    sources = ("skimage:astronaut", "skimage:chelsea")
    base = rp.make_product(7001, shape, sources)
    variant = rp.make_variant(base, "colour", np.random.default_rng(3), sources)

    def shot(product: rp.Product, angle: float) -> Keypoints:
        view = (rp.View(azimuth_deg=angle, elevation_deg=15) if shape == "box"
                else rp.View(spin_deg=angle, elevation_deg=12))  # fmt: skip
        return _keypoints(rp.render(product, view, "grey_sweep", size=SIZE).image)

    front, turned, other = shot(base, 0), shot(base, 25), shot(variant, 20)
    same, differs = match_surfaces(front, turned), match_surfaces(front, other)
    assert same.inliers >= 30 and differs.inliers >= 30  # both share a surface
    assert same.hue_turn < 10 < 40 < differs.hue_turn
    rules = GroupingParams().product_rules()
    assert rules.verdict(differs) == "colour_differs"
    assert rules.verdict(same) != "colour_differs"


@pytest.mark.parametrize(("seed", "shape"), [(7001, "box"), (7003, "box"), (7004, "cylinder")])
def test_a_flavour_variant_has_colours_the_other_pack_lacks(seed, shape):
    """A flavour variant keeps the pack's ground colour (no hue turn) and most of its print
    but prints its flavour band and fruit in another colour; another angle of the same pack
    shows the same inks in other proportions. The palettes around the matches tell them apart
    where the hue turn cannot."""
    sources = ("skimage:astronaut", "skimage:chelsea")
    base = rp.make_product(seed, shape, sources)
    variant = rp.make_variant(base, "flavour", np.random.default_rng(3), sources)

    def shot(product: rp.Product, angle: float) -> Keypoints:
        view = (rp.View(azimuth_deg=angle, elevation_deg=15) if shape == "box"
                else rp.View(spin_deg=angle, elevation_deg=12))  # fmt: skip
        return _keypoints(rp.render(product, view, "grey_sweep", size=SIZE).image)

    front = shot(base, 0)
    same, differs = match_surfaces(front, shot(base, 25)), match_surfaces(front, shot(variant, 20))
    assert same.inliers >= 30 and differs.inliers >= 30  # both share a surface
    assert same.palette_mismatch < 0.01 and differs.palette_mismatch > 0.1
    rules = GroupingParams().product_rules()
    assert rules.verdict(same) == "same_surface"
    # A variant either way: the hue turn of the matched region may tell it first.
    assert rules.verdict(differs) in ("artwork_differs", "colour_differs")


@pytest.mark.parametrize(("seed", "shape"), [(7001, "box"), (7004, "cylinder")])
def test_a_variant_from_nearly_the_same_angle_changed_its_print(seed, shape):
    """From nearly the same angle one homography lays most of one pack onto the other; a
    flavour or artwork variant then differs in one compact region. Another angle of the same
    pack does not align that well, and a global colour edit of the same shot changes every
    colour alike: neither is a changed print."""
    from bench import transforms
    from photogroup.changed_print import print_change

    sources = ("skimage:astronaut", "skimage:chelsea")
    base = rp.make_product(seed, shape, sources)
    rng = np.random.default_rng(5)
    flavour = rp.make_variant(base, "flavour", rng, sources)
    artwork = rp.make_variant(base, "artwork", rng, sources)

    def view(angle: float, lift: float = 15) -> rp.View:
        return (rp.View(azimuth_deg=angle, elevation_deg=lift) if shape == "box"
                else rp.View(spin_deg=angle, elevation_deg=lift))  # fmt: skip

    front_image = rp.render(base, view(0), "grey_sweep", size=SIZE).image
    front = _keypoints(front_image)
    rules = GroupingParams().product_rules()
    for variant in (flavour, artwork):
        near = _keypoints(rp.render(variant, view(4, 16), "grey_sweep", size=SIZE).image)
        change = print_change(front, near)
        assert change is not None and rules.print_changed(change), change
    turned = print_change(
        front, _keypoints(rp.render(base, view(30), "grey_sweep", size=SIZE).image)
    )
    assert not rules.print_changed(turned), turned
    for edit in (transforms.saturation, transforms.tint):
        copy = _keypoints(edit(front_image, np.random.default_rng(2)))
        change = print_change(front, copy)
        assert change is not None and change.aligned_share >= rules.near_aligned_share
        assert not rules.print_changed(change), (edit.__name__, change)


def test_a_changed_print_keeps_the_variant_apart_with_its_reason(twins):
    """The artwork variant shares the flavour band and layout (its palette passes): the
    changed illustration, seen from nearly the same angle, is what keeps it apart, as a
    changed print or as print that disagrees block by block once aligned."""
    from photogroup.product_links import VARIANT_VERDICTS

    placed, grouping, names = twins
    assert placed["flavour"][1] != placed["box"][1] and placed["artwork"][1] != placed["box"][1]
    verdicts: dict[frozenset, set[str]] = {}
    for c in grouping.product_checks:
        pair = frozenset((names[c["a"]], names[c["b"]])) - {"box-sticker"} | {"box"}
        verdicts.setdefault(pair, set()).add(c["verdict"])
    assert verdicts[frozenset({"box", "flavour"})] & set(VARIANT_VERDICTS)
    assert verdicts[frozenset({"box", "artwork"})] & {"print_differs", "artwork_differs"}
    rules = GroupingParams().product_rules()
    for c in grouping.product_checks:
        if c["verdict"] == "print_differs":
            assert c["print_change"]["changed_area"] > rules.max_changed_area
        elif c["verdict"] == "artwork_differs" and "aligned" in c:
            assert c["aligned"]["fine_agreement"] < rules.min_fine_agreement


def test_a_box_turned_45_degrees_matches_its_front_through_the_squeezed_keypoints(monkeypatch):
    """Its front face is squeezed to 70 % of its width, where upright SIFT descriptors
    match too few points to prove a shared surface; keypoints of the frontal photo squeezed
    the same way match them (affine simulation, photogroup.views.SURFACE_WIDTHS)."""
    base = rp.make_product(7003, "box", ("skimage:astronaut", "skimage:chelsea"))
    photos = [rp.render(base, rp.View(azimuth_deg=a, elevation_deg=15), "grey_sweep",
                        size=SIZE).image for a in (0, 45)]  # fmt: skip
    rules = GroupingParams().product_rules()
    simulated = match_surfaces(*(_keypoints(p) for p in photos))
    monkeypatch.setattr(views, "SURFACE_WIDTHS", ((1.0, 300),))
    upright = match_surfaces(*(_keypoints(p) for p in photos))
    assert rules.verdict(simulated) == "same_surface"
    assert rules.verdict(upright) == "no_shared_surface"
    assert simulated.inliers > upright.inliers


def test_a_point_and_its_simulated_copies_count_once():
    """A photo against itself: every location matches once, whatever the number of
    squeezed copies of each point (the share cannot exceed 1)."""
    base = rp.make_product(7001, "box", ("skimage:astronaut", "skimage:chelsea"))
    front = _keypoints(rp.render(base, rp.View(elevation_deg=15), "white", size=SIZE).image)
    assert front.surface_xy is not None
    itself = match_surfaces(front, front)
    assert itself.inliers < len(front.surface_xy)
    assert 0.9 <= itself.inlier_share <= 1.0


def test_a_dark_print_replaced_by_a_lit_one_is_a_changed_print():
    """Dark pixels carry no chromaticity, so a black illustration replaced by a coloured one
    is invisible to the colour comparison; in grey it is dark in one shot and clearly lit in
    the other. The same dark print a shade lighter (exposure) is no change."""
    from PIL import ImageDraw

    from photogroup.changed_print import print_change

    base = rp.make_product(7001, "box", ("skimage:astronaut", "skimage:chelsea"))
    front = rp.render(base, rp.View(azimuth_deg=0, elevation_deg=15), "white", size=SIZE).image
    near = rp.render(base, rp.View(azimuth_deg=3, elevation_deg=15), "white", size=SIZE).image

    def printed(img: Image.Image, ink: tuple[int, int, int]) -> Keypoints:
        img = img.copy()
        ImageDraw.Draw(img).ellipse((290, 200, 350, 260), fill=ink)  # on the front face
        return _keypoints(img)

    dark = printed(front, (12, 12, 16))
    rules = GroupingParams().product_rules()
    lit = print_change(dark, printed(near, (235, 140, 40)))
    shade = print_change(dark, printed(near, (34, 34, 40)))
    assert lit is not None and shade is not None
    assert lit.changed_area <= rules.max_changed_area  # the colours alone miss it
    assert lit.flipped_area > rules.max_flipped_area and rules.print_changed(lit), lit
    assert shade.flipped_area == 0.0 and not rules.print_changed(shade), shade


def _redrawn_in_grey() -> dict[str, Image.Image]:
    """A box's front with a grey illustration, the same box 12 degrees away, and 8 degrees
    away its artwork variant, whose illustration is redrawn lighter in the same neutral ink
    (no chromaticity changes): too far apart for a copy, near enough to compare print by
    print."""
    from PIL import ImageDraw

    base = rp.make_product(7001, "box", ("skimage:astronaut", "skimage:chelsea"))

    def shot(azimuth: float, ink: tuple[int, int, int]) -> Image.Image:
        view = rp.View(azimuth_deg=azimuth, elevation_deg=15)
        img = rp.render(base, view, "white", size=SIZE).image
        ImageDraw.Draw(img).ellipse((280, 190, 360, 270), fill=ink)  # on the front face
        return img

    dark, light = (70, 70, 74), (180, 180, 184)
    return {"front": shot(0, dark), "turned": shot(12, dark), "variant": shot(8, light)}


def test_an_illustration_redrawn_in_the_same_inks_is_a_changed_print():
    """No colour changed, so only the grey level tells the variant: its illustration's
    region is over ``max_shade_change`` and it is another product, with the reason. The
    same box turned as far keeps its grey levels (shading within a tone edit) and joins.
    Without the shade check the variant joins the box's product."""
    from photogroup.changed_print import print_change

    images = _redrawn_in_grey()
    photos = {name: _keypoints(img) for name, img in images.items()}
    params = GroupingParams()
    rules = params.product_rules()
    variant = print_change(photos["front"], photos["variant"], shades=True)
    assert variant is not None and variant.changed_area == 0.0 == variant.flipped_area
    assert variant.shade_area > params.max_shade_change and rules.print_changed(variant)
    plain = print_change(photos["front"], photos["variant"])
    assert plain is not None and plain.shade_area == 0.0  # measured only when asked
    turned = print_change(photos["front"], photos["turned"], shades=True)
    assert turned is not None and not rules.print_changed(turned), turned
    named = {name: upload(img) for name, img in images.items()}
    placed, grouping, names = group(named)
    assert placed["variant"][0] not in (placed["front"][0], placed["turned"][0])  # no copy
    assert placed["turned"][1] == placed["front"][1] != placed["variant"][1]
    kept = [c for c in grouping.product_checks if c["verdict"] == "print_differs"
            and "variant" in (names[c["a"]], names[c["b"]])]  # fmt: skip
    assert kept and kept[0]["print_change"]["shade_area"] > params.max_shade_change
    placed, _, _ = group(named, GroupingParams(max_shade_change=2.0))
    assert placed["variant"][1] == placed["front"][1]


def _stickered_and_watermarked(shape: str, seed: int) -> tuple[Image.Image, Image.Image]:
    from bench import transforms

    product = rp.make_product(seed, shape, ("skimage:coffee", "skimage:rocket"))
    view = rp.View(azimuth_deg=20, elevation_deg=15)
    photo = rp.render(product, view, "paper", size=SIZE, rng=np.random.default_rng(1)).image
    rng = np.random.default_rng(0)
    edited = transforms.watermark(shop_edits.sticker(shop_edits.sticker(photo, rng), rng), rng)
    return photo, edited


def test_a_copy_edited_in_several_places_joins_its_photo():
    """Two stickers and a watermark hide too much, in too many places, for the block tests;
    the pixels that show did not move, and one plane holds for every match to a tenth of a
    pixel: the copy joins its photo. Without the exact-plane test it stays apart."""
    photo, edited = _stickered_and_watermarked("cylinder", 7102)
    named = {"photo": upload(photo), "copy": upload(edited)}
    placed, grouping, _ = group(named)
    assert placed["photo"][0] == placed["copy"][0]
    (link,) = grouping.group_links
    assert link["test"] == "exact_plane" and link["second_patch"] > 3
    line = evidence_line({"evidence": [link], "members": [link["a"], link["b"]]})
    assert "same photo edited in place" in line
    placed, _, _ = group(named, GroupingParams(min_exact_inliers=10**6))
    assert placed["photo"][0] != placed["copy"][0]


def test_a_variant_shot_on_the_same_tripod_is_no_exact_copy():
    """The box swapped for its flavour variant, turned by 2 degrees on the same backdrop
    and camera: its keypoints move off the plane by far more than an edited copy's."""
    sources = ("skimage:coffee", "skimage:rocket")
    box = rp.make_product(7001, "box", sources)
    flavour = rp.make_variant(box, "flavour", np.random.default_rng(5), sources)

    def shot(product: rp.Product, spin: float) -> Keypoints:
        view = rp.View(azimuth_deg=20, elevation_deg=15, spin_deg=spin)
        rng = np.random.default_rng(1)
        return _keypoints(rp.render(product, view, "paper", size=SIZE, rng=rng).image)

    params = GroupingParams()
    swapped = match_photos(shot(box, 0.0), shot(flavour, 2.0))
    assert swapped is not None and swapped.inliers >= params.min_exact_inliers
    assert swapped.residual > params.max_exact_residual
    assert params.copy_test(swapped) is None


def _on_paper(product: rp.Product) -> Image.Image:
    view = rp.View(azimuth_deg=20, elevation_deg=15)
    return rp.render(product, view, "paper", size=SIZE, rng=np.random.default_rng(1)).image


def _joined_as_shown_smaller(named: dict[str, bytes]) -> dict:
    """The one link of a photo and its copy, which only the shown-smaller test passed."""
    placed, grouping, _ = group(named)
    assert placed["photo"][0] == placed["copy"][0]
    (link,) = grouping.group_links
    params = GroupingParams()
    assert link["test"] == "shown_smaller", link
    assert link["agreement"] < params.min_agreement <= params.min_coarse_agreement
    assert link["coarse_agreement"] >= params.min_coarse_agreement
    return link


def test_a_copy_shown_smaller_joins_its_photo():
    """In a screenshot the photo is shown at about half its size: its blocks disagree with
    the photo's at detail it no longer has (agreement under 0.9). Compared at its own
    resolution they agree: a copy, ``shown_smaller``. With that test off it stays apart."""
    photo = _on_paper(rp.make_product(7101, "box", ("skimage:coffee", "skimage:rocket")))
    screen = shop_edits.screenshot(photo, np.random.default_rng(0))
    named = {"photo": upload(photo), "copy": upload(screen)}
    link = _joined_as_shown_smaller(named)
    line = evidence_line({"evidence": [link], "members": [link["a"], link["b"]]})
    assert "same photo shown smaller" in line
    # (and judged from the screenshot's blocks, which it would pass as well)
    placed, _, _ = group(
        named, GroupingParams(min_coarse_agreement=1.01, min_reverse_agreement=2.0)
    )
    assert placed["photo"][0] != placed["copy"][0]


def test_a_downscaled_upload_is_compared_at_the_resolution_it_holds():
    """A copy uploaded at 0.3x its photo's size: its content box (about 140 px) is drawn
    on a 256 px thumbnail like the photo's, so the two thumbnails are at one scale and only
    the detail the copy lacks tells it is the coarser. Compared at its resolution it agrees
    (``shown_smaller``); taken at the thumbnails' scale it would be judged at the photo's
    detail (agreement under 0.9) and left apart."""
    photo = _on_paper(rp.make_product(7101, "box", ("skimage:coffee", "skimage:rocket")))
    small = photo.resize((192, 144), Image.Resampling.LANCZOS)
    _joined_as_shown_smaller({"photo": upload(photo), "copy": upload(small)})
    # Both thumbnails 256 px long, the copy's drawn larger than its content box: the
    # detail each holds, not their scale, is what brought the photo down.
    copy = _keypoints(small)
    assert max(_keypoints(photo).thumb.shape) == max(copy.thumb.shape) == 256
    assert max(copy.box[2] - copy.box[0], copy.box[3] - copy.box[1]) < 256 * 0.6


def test_a_variant_shown_smaller_is_no_copy():
    """A screenshot of the box's artwork variant from the same camera: brought down to the
    screenshot's resolution the print still disagrees (the closest such pair we found)."""
    sources = ("skimage:coffee", "skimage:rocket")
    box = rp.make_product(7001, "box", sources)
    artwork = rp.make_variant(box, "artwork", np.random.default_rng(5), sources)
    screen = shop_edits.screenshot(_on_paper(artwork), np.random.default_rng(0))
    params = GroupingParams()
    m = match_photos(_keypoints(_on_paper(box)), _keypoints(screen))
    assert m is not None and m.agreement < m.coarse_agreement < params.min_coarse_agreement
    assert params.copy_test(m) is None


def test_a_colour_variant_shot_from_the_same_camera_position_is_no_copy():
    """Found in a fresh-clone trial: a colour variant shot from the box's own camera
    position, small on a white backdrop, aligns on one exact plane and agrees block by
    block (0.96); only its recoloured print tells it from a copy. Edits of the same shot,
    a white-balance shift, a price sticker and a brighter copy, remain copies, and none
    of them joins the variant to the box (a tone edit that does move chromaticity is
    test_a_tone_edit_moves_chromaticity_along_its_hues)."""
    sources = ("skimage:coffee", "skimage:rocket")
    box = rp.make_product(9101, "box", sources)
    variant = rp.make_variant(box, "colour", np.random.default_rng(9102), sources)
    view = rp.View(azimuth_deg=-25, elevation_deg=12)
    shots = {
        name: upload(rp.render(p, view, "white", size=(1024, 768)).image)
        for name, p in (("box", box), ("variant", variant))
    }
    shot = Image.open(io.BytesIO(shots["box"]))
    for family in ("colour_temperature", "sticker"):
        edited = shop_edits.FAMILIES[family](shot, np.random.default_rng(9103))
        shots[family] = upload(edited)
    shots["brighter"] = upload(ImageEnhance.Brightness(shot).enhance(1.4))
    placed, _, _ = group(shots)
    assert placed["box"][0] != placed["variant"][0]
    assert placed["box"][1] != placed["variant"][1]
    assert placed["colour_temperature"][0] == placed["box"][0]
    assert placed["sticker"][0] == placed["box"][0]
    assert placed["brighter"][0] == placed["box"][0]


def test_a_copys_differing_patch_is_left_out_of_its_print_comparison():
    """The one patch a copy test lets differ (a sticker) is where a copy's print may
    change: compared outside that patch's box, a stickered copy's print is unchanged,
    while the whole comparison sees the sticker's colour."""
    from PIL import ImageDraw

    from photogroup.changed_print import print_change

    base = rp.make_product(7001, "box", ("skimage:astronaut", "skimage:chelsea"))
    shot = rp.render(base, rp.View(azimuth_deg=0, elevation_deg=15), "white", size=SIZE).image
    stickered = shot.copy()
    ImageDraw.Draw(stickered).ellipse((290, 200, 350, 260), fill=(235, 30, 40))
    a, b = _keypoints(shot), _keypoints(stickered)
    m = match_photos(a, b)
    assert m is not None and m.occluder is not None
    x0, y0, x1, y1 = m.occluder  # working-copy pixels: 512 / 640 of the render's
    assert x0 <= 290 * 0.8 and y0 <= 200 * 0.8 and x1 >= 350 * 0.8 and y1 >= 260 * 0.8
    assert (x1 - x0) * (y1 - y0) < 0.1 * a.size[0] * a.size[1]
    whole = print_change(a, b)
    outside = print_change(a, b, ignore=m.occluder)
    assert whole is not None and outside is not None
    assert whole.changed_area > GroupingParams().max_exact_recolour, whole
    assert outside.changed_area == 0.0, outside


def test_a_tone_edit_moves_chromaticity_along_its_hues():
    """More contrast clips a jar's print and moves its chromaticity over a large region,
    as a colour variant shot from the same camera position does; but along its hues, so
    the copy stays a copy, while the variant's turned hues make it a variant's twin."""
    from photogroup.changed_print import print_change

    sources = ("skimage:astronaut", "skimage:chelsea")
    jar = rp.make_product(7002, "cylinder", sources)
    variant = rp.make_variant(jar, "colour", np.random.default_rng(3), sources)
    view = rp.View(azimuth_deg=-25, elevation_deg=12)
    shot = rp.render(jar, view, "white", size=SIZE).image
    named = {
        "jar": upload(shot),
        "contrast": upload(ImageEnhance.Contrast(shot).enhance(1.5)),
        "variant": upload(rp.render(variant, view, "white", size=SIZE).image),
    }
    params = GroupingParams()
    a, b, v = (_keypoints(Image.open(io.BytesIO(data))) for data in named.values())
    toned, recoloured = print_change(a, b), print_change(a, v)
    assert toned is not None and recoloured is not None
    assert toned.changed_area > params.max_exact_recolour, toned
    assert toned.turned_area <= params.min_exact_turned_area, toned
    assert recoloured.turned_area > params.min_exact_turned_area, recoloured
    placed, _, _ = group(named)
    assert placed["contrast"][0] == placed["jar"][0]
    assert placed["variant"][0] != placed["jar"][0]


@functools.cache
def _one_camera_line(seed: int, backdrop: str, view: rp.View) -> dict[str, Image.Image]:
    """A can and its flavour variant, both shot from one camera position."""
    sources = ("skimage:coffee", "skimage:rocket")
    can = rp.make_product(seed, "cylinder", sources)
    flavour = rp.make_variant(can, "flavour", np.random.default_rng(seed + 1), sources)

    def shot(product: rp.Product) -> Image.Image:
        rng = np.random.default_rng(seed)
        return rp.render(product, view, backdrop, size=SIZE, rng=rng).image

    return {"can": shot(can), "flavour": shot(flavour)}


def _tone_case(tones: int) -> dict[str, bytes]:
    """The can and its flavour variant, with ``tones`` tone-edited copies of the can."""
    from bench import transforms

    images = dict(_one_camera_line(7205, "white", rp.View(azimuth_deg=12, elevation_deg=10)))
    for r in range(tones):
        images[f"tone{r}"] = transforms.FAMILIES["tone"](images["can"], np.random.default_rng(r))
    return {name: upload(img) for name, img in images.items()}


def test_a_tone_edited_copy_does_not_chain_a_variant_into_its_base():
    """A can and its flavour variant shot from one camera position, with two tone-edited
    copies of the can: the can and the variant are verified as twins (the print turned
    its hue over a region), but each tone-edited copy also agrees with the variant well
    enough to pass for its copy, which chained the variant into the can's strict group.
    Twins whose hue turned are kept apart: the copies stay with the can, which they agree
    with more closely, and the variant is alone. With that rule off the chain is back."""
    named = _tone_case(2)
    placed, _, _ = group(named)
    assert placed["flavour"][0] != placed["can"][0]
    assert placed["tone0"][0] == placed["tone1"][0] == placed["can"][0]
    placed, _, _ = group(named, GroupingParams(min_apart_turned_area=1.0))
    assert placed["flavour"][0] == placed["can"][0]


def test_twins_whose_hue_did_not_turn_are_not_kept_apart(monkeypatch):
    """Two edited copies of one photo (a tone edit against a pair of edits) can change a
    region's colour, which refuses their copy link, but rarely turn its hue: such twins
    are not kept apart, so their other links still join them (here the can and its
    variant of the test above, their twin verdict's turned hues set to none)."""
    verdict = GroupingParams.variant_twin

    def unturned(self, *args, **kwargs):
        change = verdict(self, *args, **kwargs)
        return None if change is None else dataclasses.replace(change, turned_area=0.0)

    monkeypatch.setattr(GroupingParams, "variant_twin", unturned)
    placed, grouping, names = group(_tone_case(1))
    assert placed["flavour"][0] == placed["can"][0]
    linked = {frozenset((names[e["a"]], names[e["b"]])) for e in grouping.group_links}
    assert frozenset(("can", "flavour")) not in linked  # the twin's own link stays refused


def _blur_case() -> dict[str, bytes]:
    """A jar on paper, a blurred copy of it, and its flavour variant from the same camera,
    blurred the same way."""
    from bench import transforms

    seed, blur = 7301, transforms.FAMILIES["blur"]
    line = _one_camera_line(seed, "paper", rp.View(azimuth_deg=15, elevation_deg=12))
    images = {"photo": line["can"], "blurred": blur(line["can"], np.random.default_rng(seed)),
              "flavour-blurred": blur(line["flavour"], np.random.default_rng(seed))}  # fmt: skip
    return {name: upload(img) for name, img in images.items()}


def test_a_blurred_copy_joins_its_photo_at_one_sharpness():
    """Blurred, the copy's blocks disagree with the sharp photo's at detail it lost
    (agreement 0.79). With the photo blurred to the copy's sharpness they agree: a copy,
    ``blurred``. With that test off it stays apart."""
    named = {name: data for name, data in _blur_case().items() if name != "flavour-blurred"}
    placed, grouping, _ = group(named)
    assert placed["photo"][0] == placed["blurred"][0]
    (link,) = grouping.group_links
    params = GroupingParams()
    assert link["test"] == "blurred", link
    assert link["agreement"] < params.min_agreement
    assert link["coarse_agreement"] == link["agreement"]  # one scale: nothing shown smaller
    assert link["soft_agreement"] >= params.min_soft_agreement
    line = evidence_line({"evidence": [link], "members": [link["a"], link["b"]]})
    assert "same photo blurred or noisy" in line
    placed, _, _ = group(named, GroupingParams(min_soft_agreement=1.01))
    assert placed["photo"][0] != placed["blurred"][0]


def test_a_blurred_variant_from_the_same_camera_is_no_copy():
    """The jar's flavour variant shot from the same camera and blurred: at one sharpness
    its blocks agree with the photo's as a blurred copy's do (the blur took the flavour
    text's detail), but its print changed colour, which makes it the variant's twin, so
    it joins neither the photo nor its copy."""
    named = _blur_case()
    placed, _, _ = group(named)
    assert placed["photo"][0] == placed["blurred"][0] != placed["flavour-blurred"][0]
    params = GroupingParams()
    photo, variant = (
        _keypoints(Image.open(io.BytesIO(named[n]))) for n in ("photo", "flavour-blurred")
    )
    m = match_photos(photo, variant)
    assert m is not None and params.copy_test(m) == "blurred"
    assert params.variant_twin(m, photo, variant, test="blurred") is not None


def test_soft_agreement_compares_at_the_softer_ones_sharpness():
    """The sharper thumbnail is blurred until its gradient energy matches the softer
    one's; two thumbnails equally sharp keep their plain agreement."""
    from photogroup.verify import _soft_agreement

    rng = np.random.default_rng(0)
    texture = np.kron(rng.integers(0, 256, (32, 32)), np.ones((4, 4))).astype(np.uint8)
    soft = np.asarray(Image.fromarray(texture).filter(ImageFilter.GaussianBlur(2.5)))
    covered = np.ones(texture.shape, bool)
    plain = block_agreement(texture, soft, covered).agreement
    assert plain < 0.9
    assert _soft_agreement(texture, np.eye(3), soft, covered, plain) >= 0.98
    assert _soft_agreement(texture, np.eye(3), texture, covered, 1.0) == 1.0
    twice = np.diag([2.0, 2.0, 1.0])  # shown at another scale: the coarse test's business
    assert _soft_agreement(texture, twice, soft, covered, plain) == plain


def _artwork_line(
    seed: int, shape: str, azimuths: tuple[float, float, float] = (-20, 20, 0)
) -> dict[str, Image.Image]:
    """A product from two angles (by default 20 degrees either side of its front) and its
    artwork variant (another illustration and pattern) from a third (the front)."""
    sources = ("skimage:coffee", "skimage:rocket")
    base = rp.make_product(seed, shape, sources)
    artwork = rp.make_variant(base, "artwork", np.random.default_rng(seed + 1), sources)

    def shot(product: rp.Product, azimuth: float) -> Image.Image:
        view = rp.View(azimuth_deg=azimuth, elevation_deg=12)
        return rp.render(product, view, "white", size=SIZE, rng=np.random.default_rng(seed)).image

    left, right, other = azimuths
    return {"left": shot(base, left), "right": shot(base, right), "artwork": shot(artwork, other)}


@pytest.mark.parametrize(("seed", "shape"), [(7405, "box"), (7418, "box"), (7403, "cylinder")])
def test_the_print_of_two_angles_laid_by_their_matches(seed, shape):
    """Laid onto each other by the triangles between their surface matches (each on one
    plane), two angles of one product show the same print; the artwork variant, which
    SIFT matches on the panels the packs share, shows a changed region."""
    from photogroup.surface_print import surface_print_change

    line = {name: _keypoints(img) for name, img in _artwork_line(seed, shape).items()}
    params = GroupingParams()

    def change(x: str, y: str) -> float:
        _, found = views.surface_match(line[x], line[y])
        assert found is not None
        c = surface_print_change(line[x], line[y], *found)
        assert c is not None
        return max(c.changed_area, c.flipped_area)

    assert change("left", "right") <= params.max_surface_change
    assert max(change("left", "artwork"), change("right", "artwork")) > params.max_surface_change


def test_an_artwork_variant_from_another_angle_is_kept_apart():
    """A tea box from two angles 40 degrees apart and its artwork variant 30 degrees from
    the nearer: SIFT matches the variant's shared panels under one fundamental matrix, as
    it matches the two views; the print laid by those matches changed, so the variant is
    another product, with the reason. With that check off, it joins the box's product."""
    line = _artwork_line(7428, "box", (-25, 15, 45))
    named = {name: upload(img) for name, img in line.items()}
    placed, grouping, names = group(named)
    assert placed["left"][1] == placed["right"][1]
    assert placed["artwork"][1] != placed["left"][1]
    kept = [c for c in grouping.product_checks if "artwork" in (names[c["a"]], names[c["b"]])]
    assert any(c["verdict"] == "print_differs" and "surface_print" in c for c in kept), kept
    placed, _, _ = group(named, GroupingParams(max_surface_change=1.0))
    assert placed["artwork"][1] == placed["left"][1]


def test_two_faces_in_other_light_are_one_box():
    """Two angles of a tea box 40 degrees apart: SIFT matches the print under one
    fundamental matrix, but the faces are lit differently, so the colours at the matches
    differ by about 12 (CIELAB a*b*): still one product, with a colour variant of the box
    shot from one of the angles kept apart by its hues. With the old limit of 10, the two
    angles were called a colour variant of each other."""
    sources = ("skimage:coffee", "skimage:rocket")
    box = rp.make_product(7454, "box", sources)
    variant = rp.make_variant(box, "colour", np.random.default_rng(7455), sources)

    def shot(product: rp.Product, azimuth: float) -> bytes:
        view = rp.View(azimuth_deg=azimuth, elevation_deg=12)
        rng = np.random.default_rng(7454)
        return upload(rp.render(product, view, "white", size=SIZE, rng=rng).image)

    named = {"left": shot(box, -25), "right": shot(box, 15), "colour": shot(variant, 15)}
    placed, grouping, names = group(named)
    assert placed["left"][1] == placed["right"][1]
    assert placed["colour"][1] != placed["left"][1]
    views_of_box = [c for c in grouping.product_checks
                    if {names[c["a"]], names[c["b"]]} == {"left", "right"}]  # fmt: skip
    assert views_of_box and 10 < views_of_box[0]["colour_difference"] <= 15, views_of_box
    placed, _, _ = group(named, GroupingParams(max_colour_difference=10.0))
    assert placed["left"][1] != placed["right"][1]


def _judged_the_other_way_round(seed: int, edit) -> dict:
    """A bottle on a blurred photo and ``edit`` of it, grouped: their one link, after
    checking that they share a strict group through a link judged from the copy's side
    and stay apart with judging the other way round turned off."""
    sources = ("skimage:astronaut", "skimage:chelsea", "skimage:coffee")
    bottle = rp.make_product(seed, "cylinder", sources)
    view = rp.View(azimuth_deg=10, elevation_deg=15)
    photo = rp.render(bottle, view, "blurred_photo", backdrop="skimage:coffee").image
    named = {"photo": upload(photo), "copy": upload(edit(photo))}
    placed, grouping, _ = group(named)
    assert placed["photo"][0] == placed["copy"][0]
    (link,) = grouping.group_links
    assert link["judged_from"] == "b", link
    placed, _, _ = group(named, GroupingParams(min_reverse_agreement=2.0))
    assert placed["photo"][0] != placed["copy"][0]
    return link


def test_a_copy_that_lost_detail_is_judged_from_its_own_blocks():
    """A copy tilted by keystone and given a tone curve (the shop edits' pair with seed
    35): the tilt resamples the print, so the photo's fine text finds nothing to agree
    with in the copy and, judged by the photo's textured blocks, the pair is no copy.
    Judged by the copy's blocks it agrees everywhere: it joins its photo's strict group,
    and its evidence says which way it was judged."""
    link = _judged_the_other_way_round(
        7301, lambda photo: shop_edits.shop_pair(photo, np.random.default_rng(35))
    )
    assert link["agreement"] >= 0.99, link
    line = evidence_line({"evidence": [link], "members": [link["a"], link["b"]]})
    assert f"judged by {link['b']}'s blocks" in line


def test_a_stickered_copy_may_pass_one_patch_differs_from_its_own_side():
    """A price sticker: judged from the photo, the colours under the sticker leave an a*b*
    residual just over what a global colour edit may (8.03 against 8.0); judged from the
    stickered copy (7.1) the rest of the photo matches exactly around one patch:
    ``one_patch_differs`` the other way round."""
    link = _judged_the_other_way_round(
        7403, lambda photo: shop_edits.sticker(photo, np.random.default_rng(31))
    )
    assert link["test"] == "one_patch_differs", link
