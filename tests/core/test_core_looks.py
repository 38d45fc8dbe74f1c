"""same_look links: views of one product too far apart to share a surface, joined by their
look (embedding and whole-pack colours), and refused where a variant makes them ambiguous."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench import render_products as rp
from photogroup.cluster import GroupingParams
from photogroup.looks import look_mismatch
from photogroup.product_links import (
    AMBIGUOUS_LOOK,
    CLAIMS,
    LACKS_COLOURS,
    LONE_GROUPS_ONLY,
    UNLIKE,
    _merge_looks,
    _Products,
    _rival_claims,
)
from photogroup.views import match_surfaces
from tests.core.test_core_product_grouping import SIZE, _keypoints, group, upload

SOURCES = ("skimage:astronaut", "skimage:chelsea")


@pytest.fixture(scope="module")
def far_views() -> dict[str, Image.Image]:
    """One box from 90 degrees apart (front and side, then side and back) and another
    product of the same shape from the first angle."""
    box = rp.make_product(7001, "box", SOURCES)
    other = rp.make_product(7011, "box", SOURCES)
    shots = {"front": (box, -30), "side": (box, 60), "other": (other, -30)}
    return {
        name: rp.render(p, rp.View(azimuth_deg=a, elevation_deg=15), "grey_sweep", size=SIZE).image
        for name, (p, a) in shots.items()
    }


def test_views_sharing_no_surface_join_by_their_look(far_views):
    rules = GroupingParams().product_rules()
    front, side = _keypoints(far_views["front"]), _keypoints(far_views["side"])
    assert rules.verdict(match_surfaces(front, side)) == "no_shared_surface"

    placed, grouping, names = group({n: upload(img) for n, img in far_views.items()})
    assert placed["front"][1] == placed["side"][1]
    assert placed["front"][0] != placed["side"][0]  # other angles: never one strict group
    assert placed["other"][1] != placed["front"][1]
    [link] = grouping.product_links
    assert link["rule"] == link["verdict"] == "same_look"
    assert {names[link["a"]], names[link["b"]]} == {"front", "side"}
    assert link["cosine"] >= rules.cos_look
    assert link["look_mismatch"] <= rules.max_look_mismatch


def test_another_pack_of_the_same_shape_lacks_the_colours(far_views):
    front, other = _keypoints(far_views["front"]), _keypoints(far_views["other"])
    mismatch = look_mismatch(front, other)
    assert mismatch is not None and mismatch > GroupingParams().max_look_mismatch
    assert look_mismatch(front, _keypoints(far_views["side"])) == pytest.approx(0.0, abs=0.05)


def test_a_greyscale_copy_proves_nothing_by_its_look(far_views):
    grey = ImageOps.grayscale(far_views["side"]).convert("RGB")
    assert look_mismatch(_keypoints(far_views["front"]), _keypoints(grey)) is None


def _claims(matrix: dict[tuple[int, int], float], colours_lacking: dict | None = None):
    """A rival's claim over an embedding-cosine matrix; ``colours_lacking`` (pair -> share)
    stands in for the whole-pack colour comparison (matching colours when absent)."""
    lacking = colours_lacking or {}

    def claims(rival: list[int], side: list[int], floor: float, own: float) -> str:
        close = [p for x in rival for y in side
                 if matrix.get(p := (min(x, y), max(x, y)), 0.0) >= floor]  # fmt: skip
        if any(lacking.get(p, 0.0) <= own + 0.05 for p in close):
            return CLAIMS
        return LACKS_COLOURS if close else UNLIKE

    return claims


def test_a_look_is_refused_when_a_variant_kept_apart_looks_as_much_alike():
    """Group 0 is a pack's front, 1 its variant (kept apart from 0), 2 the pack's back,
    which looks like either; 3 and 4 are another product's two sides with no variant."""
    alike = {(0, 1): 0.97, (0, 2): 0.93, (1, 2): 0.95, (3, 4): 0.9}
    looks = [(0.95, (1, 2), {"pair": "1-2"}), (0.93, (0, 2), {"pair": "0-2"}),
             (0.9, (3, 4), {"pair": "3-4"})]  # fmt: skip
    products = _Products(5, {(0, 1)})
    links = _merge_looks(products, looks, _claims(alike), 0.1)
    product_of = products.product_of()
    assert len(set(product_of[[0, 1, 2]])) == 3  # the back joins neither
    assert product_of[3] == product_of[4]
    assert [link["pair"] for link in links] == ["3-4"]
    assert all(e["refused"] == AMBIGUOUS_LOOK for _, _, e in looks[:2])

    # Without the margin the closest look wins, and the other link then joins products kept
    # apart: refused for that reason.
    looks = [(c, pair, {}) for c, pair, _ in looks]
    products = _Products(5, {(0, 1)})
    _merge_looks(products, looks, _claims(alike), 0.0)
    product_of = products.product_of()
    assert product_of[1] == product_of[2] != product_of[0]
    assert looks[1][2]["refused"] == "would join products kept apart by a variant check"


def test_a_rival_claims_only_through_pairs_whose_colours_match(far_views):
    """``_rival_claims`` on real photos (group i = photo i): another pack of the same shape
    is as close in embedding to the front as the side is, but lacks the front's colours;
    the side has them. Without colours compared (slack 1.0) both claim; above every cosine
    neither; a photo without keypoints cannot be told apart by colour, so it claims."""
    names = ["front", "side", "other"]
    keypoints = [_keypoints(far_views[n]) for n in names] + [None]
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]], dtype=np.float32)
    group_of = np.arange(4)
    claims = _rival_claims(group_of, emb, keypoints, 0.05)
    assert claims([2], [0], 0.5, 0.0) == LACKS_COLOURS
    assert claims([1], [0], 0.5, 0.0) == CLAIMS
    assert claims([0], [2], 0.5, 0.0) == LACKS_COLOURS  # either way round
    assert claims([2], [0], 0.999, 0.0) == UNLIKE
    assert claims([3], [0], 0.5, 0.0) == CLAIMS
    assert claims([2, 1], [0], 0.5, 0.0) == CLAIMS  # any one pair is enough
    assert _rival_claims(group_of, emb, keypoints, 1.0)([2], [0], 0.5, 0.0) == CLAIMS


def test_a_variant_lacking_the_colours_cannot_make_a_look_ambiguous():
    """The same groups, but the variant (1) lacks the back's colours: a colour variant
    cannot claim the back, so the back joins its front."""
    alike = {(0, 1): 0.97, (0, 2): 0.93, (1, 2): 0.95}
    looks = [(0.93, (0, 2), {"pair": "0-2", "look_mismatch": 0.02})]
    products = _Products(3, {(0, 1)})
    links = _merge_looks(products, looks, _claims(alike, {(1, 2): 0.4}), 0.1)
    assert [link["pair"] for link in links] == ["0-2"]
    assert products.root(0) == products.root(2) != products.root(1)


def test_near_a_colour_variant_a_look_never_joins_two_products():
    """Groups 0+1 are one product (joined by a surface link), 2+3 another, 4 a colour
    variant kept apart from 0 and lacking 3's colours. The look 1-3 would join the two
    products (an artwork variant, not kept apart, could be what it found): refused. The
    look 1-5 attaches a lone group and stands."""
    alike = {(1, 3): 0.93, (3, 4): 0.95, (1, 5): 0.92, (4, 5): 0.9}
    lacking = {(3, 4): 0.4, (4, 5): 0.4}
    products = _Products(6, {(0, 4)})
    products.join(0, 1)
    products.join(2, 3)
    looks = [(0.93, (1, 3), {"pair": "1-3", "look_mismatch": 0.0}),
             (0.92, (1, 5), {"pair": "1-5", "look_mismatch": 0.0})]  # fmt: skip
    links = _merge_looks(products, looks, _claims(alike, lacking), 0.1)
    assert [link["pair"] for link in links] == ["1-5"]
    assert links[0]["near_colour_variant"] is True
    assert looks[0][2]["refused"] == LONE_GROUPS_ONLY
    assert products.root(1) == products.root(5) != products.root(3)


@pytest.fixture(scope="module")
def colour_rival() -> dict[str, Image.Image]:
    """The box's two far views of ``far_views`` and its colour variant from the front's
    angle and 10 degrees away (kept apart from the front by its turned hues)."""
    box = rp.make_product(7001, "box", SOURCES)
    variant = rp.make_variant(box, "colour", np.random.default_rng(7002), SOURCES)
    shots = {"front": (box, -30), "side": (box, 60), "variant": (variant, -30),
             "variant-near": (variant, -20)}  # fmt: skip
    return {
        name: rp.render(p, rp.View(azimuth_deg=a, elevation_deg=15), "grey_sweep", size=SIZE).image
        for name, (p, a) in shots.items()
    }


@pytest.mark.parametrize("slack", [GroupingParams().rival_look_slack, 1.0])
def test_a_colour_variant_kept_apart_leaves_the_look_to_its_product(colour_rival, slack):
    """End to end: the side view joins its front by their look although the colour variant
    kept apart from the front is nearly as close in embedding; with the rival's colours not
    compared (slack 1.0) the link is refused as ambiguous, as it used to be."""
    params = dataclasses.replace(GroupingParams(), rival_look_slack=slack)
    placed, grouping, names = group({n: upload(i) for n, i in colour_rival.items()}, params)
    product = {name: p for name, (_, p) in placed.items()}
    assert product["variant"] == product["variant-near"] != product["front"]
    verdicts = {frozenset((names[c["a"]], names[c["b"]])): c for c in grouping.product_checks}
    assert verdicts[frozenset(("front", "variant"))]["verdict"] == "colour_differs"
    look = verdicts[frozenset(("front", "side"))]
    assert look["verdict"] == "same_look"
    if slack < 1.0:
        assert product["side"] == product["front"]
        assert "refused" not in look and look["near_colour_variant"] is True
    else:
        assert product["side"] != product["front"]
        assert "looks as much like the other" in look["refused"]
