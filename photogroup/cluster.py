"""Two-level grouping of a batch: strict duplicate groups, then product groups.

* Strict (``group_id``): copies and edits of one photo. Candidate pairs (close dihedral
  pHashes, or embedding neighbours) are verified by :func:`photogroup.verify.match_photos`:
  aligned onto each other, they must look the same over most of one image (``min_overlap``,
  ``min_agreement``). Another viewpoint of a product aligns at best one plane and disagrees
  elsewhere, however close its hash. A variant shot from its base's angle can agree as an
  edited copy does; where its print changed in one region and one plane does not hold
  exactly (another shot, not an overlay), it is not a copy. Images without keypoints fall
  back to hashes: ``hash_sure``, or ``hash_loose`` with embeddings agreeing to
  ``cos_strict``.
* Product (``product_id``): strict groups whose photos show one printed surface from other
  angles with the same colours and artwork (:mod:`photogroup.product_links`).

Candidates come from sub-quadratic searches (:mod:`photogroup.neighbours`), never from an
n x n matrix. Strict links are cut into groups component by component with a centre check
against chaining: a component's best-connected image becomes a centre and takes its
neighbours, plus their neighbours only if those are close to the centre too. Two images
verified as a variant's twins (a copy test held, the print changed and turned its hue)
never share a group: an edited copy of a base (a tone or white-balance edit) resembles
the variant too, so before the cut, links are joined closest first (the share of the two
images that agrees) and a link that would join two images kept apart is dropped.

Every link keeps its evidence (rule, inliers, overlap, agreement, hash distance, colour
difference), returned by :func:`group_with_evidence`. Group and product ids derive from the
SHA-256 of their centre image, chosen by degree and then by id, so the same batch gets the
same ids on every run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from photogroup.changed_print import PrintChange, print_change
from photogroup.colours import colour_name
from photogroup.descriptor_votes import descriptor_pairs
from photogroup.neighbours import hash_pairs, pair_cosines, similar_pairs, unique_pairs
from photogroup.product_links import ProductRules, link_products
from photogroup.verify import (
    ALIGN_HERE,
    AlignmentArg,
    Keypoints,
    PhotoMatch,
    align,
    match_photos,
)


def _on_one_plane(m: PhotoMatch, min_inlier_ratio: float, max_residual: float) -> bool:
    """One homography of the keypoint matches holds for this share of them, this tightly
    (of the diagonal): the copy tests that let blocks differ rest on it."""
    return (
        m.method == "keypoints"
        and m.inliers >= min_inlier_ratio * m.good
        and m.residual <= max_residual
    )


@dataclass(frozen=True)
class GroupingParams:
    """Thresholds, chosen on the calibration sets of ``bench/grouping.py`` (never on the
    evaluation sets); the comments say what each decides."""

    # Strict level.
    hash_sure: int = 4  # without keypoints: dihedral pHash bits (of 64) for "same photo"
    hash_loose: int = 14  # hash alignment is tried up to this distance (without keypoints:
    cos_strict: float = 0.90  # linked if the embeddings also agree this much)
    cos_candidate: float = 0.30  # embedding neighbours at least this close are verified
    neighbours: int = 20  # nearest neighbours searched per image
    descriptor_candidates: int = 5  # ... plus the images sharing the most ORB descriptors
    min_overlap: float = 0.5  # aligned copy covers this share of one of the two images
    min_agreement: float = 0.9  # share of textured blocks that look the same once aligned
    # ... or this share once compared at the coarser image's resolution, where one is shown
    # much smaller (a screenshot, a thumbnail: photogroup.verify.COARSE_SCALE)
    min_coarse_agreement: float = 0.95
    # ... or this share at one scale once the sharper is blurred to the other's sharpness
    # (a blurred or noisy copy: photogroup.verify.SOFT_RATIO)
    min_soft_agreement: float = 0.98
    # Blocks are those textured in the first image of a pair: a copy that lost detail (a
    # screenshot, a keystone or resize resampling it) disagrees where only the sharper one
    # has texture. A pair that fails one way round, aligned as a copy would be, is judged
    # the other way round too, from the other image's blocks, at this agreement at least
    # (at any of the three scales above). On the five calibration seeds' verified pairs,
    # different photos reach at most 0.96 that way (a variant beside its base's screenshot)
    # and 0.98 and 0.99 join the same copies; the stricter was taken. The patch tests
    # (one_patch_differs, exact_plane) apply the other way round as they are.
    min_reverse_agreement: float = 0.99
    min_blocks: int = 6  # fewer textured blocks than this prove nothing
    min_inlier_ratio: float = 0.5  # ORB matches the homography explains, of all good ones
    max_second_plane: float = 0.1  # a second plane's inliers, relative to the first's ...
    # ... unless there are at most this many: a homography needs 4 matches, and among the
    # few outliers of a small image's ORB matches chance alone finds one that fits 6
    min_second_plane: int = 8
    max_colour_residual: float = 8.0  # a*b* error no global colour edit explains
    max_hue_turn: float = 60.0  # degrees: an edit turns saturated hues less, a colour variant more
    # ... or one patch differs (a sticker, a price tag) and everything else matches exactly:
    min_rest_agreement: float = 0.95  # agreement outside the patch's box
    max_second_patch: int = 3  # blocks: the pack a few degrees away differs in several places
    min_occlusion_inlier_ratio: float = 0.95  # one homography explains almost every match
    max_occluded: float = 0.6  # the box hides at most this share of the textured blocks
    max_copy_residual: float = 0.0005  # inliers this close to one plane (of the diagonal)
    # ... or resampled as a whole (blurred, scaled, framed): blocks agree less, but one plane
    # holds for nearly every match, tightly, and no region of the print changed
    # (photogroup.changed_print; ``min_artwork_change``, the product level's threshold):
    min_resampled_agreement: float = 0.8
    min_resampled_inlier_ratio: float = 0.9
    max_resampled_residual: float = 0.0015
    max_resampled_second_plane: int = 3
    # ... or edited in place (stickers, watermarks, text over it, however many patches): one
    # homography puts nearly every one of many ORB matches where it belongs to within a
    # tenth of a pixel. Chance fits that exactly only to a handful of matches, and another
    # shot, even from the same tripod, moves its keypoints by more.
    min_exact_inliers: int = 50
    min_exact_inlier_ratio: float = 0.8
    max_exact_residual: float = 0.0001
    cos_centre: float = 0.50  # second-hop members must be this close to the centre
    # Product level.
    product_neighbours: int = 15  # embedding neighbours proposed per image
    cos_product_candidate: float = 0.0  # ... if at least this close
    pairs_per_groups: int = 3  # photo pairs verified per pair of strict groups
    min_surface_inliers: int = 30  # SIFT matches under one fundamental matrix
    min_inlier_share: float = 0.1  # ... over the smaller image's keypoints
    min_matched_area: float = 0.1  # hull of the matches over hull of all keypoints
    # Median a*b* distance at the matches. Another face of a box in other light shifts
    # a*b* too: two angles of one box 40 degrees apart read up to 12.5 (30 boxes, 3
    # backdrops), and 10 to 30 gave the same calibration figures.
    max_colour_difference: float = 15.0
    min_density: float = 0.2  # share of keypoints inside the matched hull that matched
    cos_product: float = 0.80  # without keypoints: embedding cosine for one product
    near_agreement: float = 0.75  # shots this alike once aligned are compared print by print:
    max_hue_turn_product: float = 20.0  # ... hues turned more: a colour variant
    min_fine_agreement: float = 0.8  # ... fewer blocks agreeing closely: another design
    max_palette_mismatch: float = 0.045  # share of colours near the matches the other lacks
    # Shots from nearly the same angle (photogroup.changed_print): one homography holds for
    # at least this share of the keypoints, and a region this large (share of the compared
    # area) changed colour: a variant.
    near_aligned_share: float = 0.2
    max_changed_area: float = 0.02
    max_flipped_area: float = 0.02  # ... or a region this large went from dark to lit
    # ... or one whose grey level changed beyond a tone edit (changed_print.CHANGE_GREY): an
    # illustration redrawn in the same inks changes no chromaticity. On the five calibration
    # seeds variant pairs merged 4.9 -> 4.0 % (product F1 0.661 -> 0.654); copy links off
    # one plane there (1,162, real photos included) reach at most 0.5 % (measured by a
    # scratch version fitting the tone gain without the spread rule).
    max_shade_change: float = 0.008
    # A copy-like pair on one exact plane whose print changed colour over a larger share is
    # a variant shot from its base's camera position, not a copy (variant_twin):
    max_exact_recolour: float = 0.03
    min_exact_turned_area: float = 0.02  # ... and turned the hue of this much (not a tone edit)
    # A variant's twin whose print turned hues over more than this share is also kept out of
    # its twin's strict group (cut_groups): two edited copies of one photo (a tone edit
    # against a pair of edits) can change a region's colour, but rarely turn its hue.
    min_apart_turned_area: float = 0.02
    # Near-angle shots whose blocks disagree (min_fine_agreement) are another design only if
    # some region of the print changed by more than this share (else an edit, resampling):
    min_artwork_change: float = 0.005
    # Two angles of one surface (not nearly the same angle) whose print, laid by the
    # triangles between their matches (photogroup.surface_print), changed in a region
    # larger than this share of the compared area: another design of the pack (a
    # cannot-link, as a changed print from one angle is).
    max_surface_change: float = 0.01
    # No shared surface, but the same look (photogroup.looks): embeddings this close ...
    cos_look: float = 0.80
    max_look_mismatch: float = 0.10  # ... and this share of coloured pixels at most lacking
    look_margin: float = 0.10  # refused if a variant kept apart is within this much as alike
    rival_look_slack: float = 0.05  # ... with colours lacking at most this much more

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def same_photo(self, m: PhotoMatch) -> bool:
        """The strict rule on a verified pair (see :mod:`photogroup.verify`)."""
        return self.copy_test(m) is not None

    def copy_test(self, m: PhotoMatch) -> str | None:
        """Which test makes ``m`` a copy of one photo: ``agreement`` (the aligned images look
        the same almost everywhere), ``shown_smaller`` (they do once the finer one is brought
        down to the coarser one's resolution: a screenshot, a thumbnail), ``blurred``
        (at one scale, they do once the sharper one is blurred to the other's sharpness: a
        blurred or noisy copy),
        ``one_patch_differs`` (a sticker or tag hides one compact part, the rest matches
        exactly, and one homography puts almost every keypoint match where it belongs to
        within a pixel or so; the same pack shot from a few degrees away, with another
        illustration, also differs in one patch, but its faces and depth fit one plane less
        well), ``exact_plane`` (edited in several places, or a large sticker, on pixels that
        did not move: many matches on one plane to a tenth of a pixel, at most
        ``max_occluded`` of the blocks hidden), or None."""
        if not self._geometry(m):
            return None
        if m.agreement >= self.min_agreement:
            return "agreement"
        if m.coarse_agreement >= self.min_coarse_agreement:
            return "shown_smaller"
        if m.soft_agreement >= self.min_soft_agreement:
            return "blurred"
        return self._patch_test(m)

    def _patch_test(self, m: PhotoMatch) -> str | None:
        if (
            _on_one_plane(m, self.min_occlusion_inlier_ratio, self.max_copy_residual)
            and m.rest_agreement >= self.min_rest_agreement
            and m.second_patch <= self.max_second_patch
            and m.occluded <= self.max_occluded
        ):
            return "one_patch_differs"
        if (
            _on_one_plane(m, self.min_exact_inlier_ratio, self.max_exact_residual)
            and m.inliers >= self.min_exact_inliers
            and m.occluded <= self.max_occluded
        ):
            return "exact_plane"
        return None

    def worth_reversing(self, m: PhotoMatch) -> bool:
        """One homography holds as it does for a copy (whatever the blocks and colours
        said): worth judging the other way round (``min_reverse_agreement`` over 1 turns
        that off)."""
        return (
            self.min_reverse_agreement <= 1.0
            and m.overlap >= self.min_overlap
            and (m.method == "hash" or m.inliers >= self.min_inlier_ratio * m.good)
        )

    def reverse_copy_test(self, m: PhotoMatch) -> str | None:
        """:meth:`copy_test` of a pair judged from its other image: the agreement tests
        at ``min_reverse_agreement``, the patch tests (a sticker seen from the stickered
        copy) as they are."""
        if not self._geometry(m):
            return None
        least = self.min_reverse_agreement
        if m.agreement >= least:
            return "agreement"
        if m.coarse_agreement >= max(least, self.min_coarse_agreement):
            return "shown_smaller"
        if m.soft_agreement >= max(least, self.min_soft_agreement):
            return "blurred"
        return self._patch_test(m)

    def _geometry(self, m: PhotoMatch) -> bool:
        return (
            m.blocks >= self.min_blocks
            and m.overlap >= self.min_overlap
            and (m.method == "hash" or m.inliers >= self.min_inlier_ratio * m.good)
            and m.second_plane <= max(self.max_second_plane * m.inliers, self.min_second_plane)
            and m.colour_residual <= self.max_colour_residual
            and m.hue_turn <= self.max_hue_turn
        )

    def resampled_copy(
        self, m: PhotoMatch, a: Keypoints, b: Keypoints, alignment: AlignmentArg = ALIGN_HERE
    ) -> bool:
        """A copy the two tests above miss: blurred, scaled, padded or shown in an app frame,
        its blocks agree less everywhere (0.8-0.9 on small products), while one homography
        puts nearly every keypoint match within a fraction of a pixel and no region of the
        print changed (the product level's :meth:`ProductRules.print_moved`, where a change
        could show: not against a grayscale copy). A variant shot from its base's angle
        agrees more (0.9-0.96: only its flavour band or illustration differs) but changes a
        region, and another shot of one pack fits one plane less tightly."""
        if not (
            self._geometry(m)
            and m.good > 0  # keypoint matches (the hash may have aligned the blocks)
            and m.agreement >= self.min_resampled_agreement
            and m.inliers >= self.min_resampled_inlier_ratio * m.good
            and m.residual <= self.max_resampled_residual
            and m.second_plane <= self.max_resampled_second_plane
        ):
            return False
        change = print_change(a, b, alignment=alignment)
        # A grey copy shows no changed colour, so it proves no print unchanged (a grayscale
        # copy of a base against its artwork variant would pass).
        return (
            change is not None and not change.blind and not self.product_rules().print_moved(change)
        )

    def variant_twin(
        self,
        m: PhotoMatch,
        a: Keypoints,
        b: Keypoints,
        alignment: AlignmentArg = ALIGN_HERE,
        test: str = "agreement",
    ) -> PrintChange | None:
        """A pair a copy test (``test``) took for a copy that is another shot of a variant:
        its print changed in one region (:mod:`photogroup.changed_print`, the product
        level's thresholds), and one homography does not hold to within a copy's residual.
        A flavour variant shot from the base's angle agrees in 90-99 % of its blocks, as
        an edited copy does; its changed flavour band or fruit is what tells it. A sticker
        also changes one region, but sits on a copy that one plane aligns exactly; so does
        a variant shot from its base's camera position (a studio camera on a tripod), whose
        recoloured region is the larger: passing ``agreement``, a sticker hides at most a
        tenth of the textured blocks and recolours little (``max_exact_recolour``); a
        tone edit (brightness, contrast, gamma) moves chromaticity too where it clips or
        curves, but along its hue, where a variant turns hues (``min_exact_turned_area``).
        Under the tests that let one patch differ, the print is compared outside that
        patch: a stickered copy of the variant's base recolours nothing else.
        ``alignment``: :func:`photogroup.verify.align`'s, when the caller has it. Returns
        the print change that makes the pair a twin, or None."""
        patched = test in ("one_patch_differs", "exact_plane")
        ignore = m.occluder if patched else None
        change = print_change(a, b, alignment=alignment, ignore=ignore)
        if change is None or change.aligned_share < self.near_aligned_share:
            return None
        if patched or m.residual <= self.max_copy_residual:  # one exact plane
            twin = (
                change.changed_area > self.max_exact_recolour
                and change.turned_area > self.min_exact_turned_area
            )
        else:
            twin = change.changed_area > self.max_changed_area
        return change if twin else None

    def product_rules(self) -> ProductRules:
        return ProductRules(
            neighbours=self.product_neighbours,
            cos_candidate=self.cos_product_candidate,
            pairs_per_groups=self.pairs_per_groups,
            min_inliers=self.min_surface_inliers,
            min_inlier_share=self.min_inlier_share,
            min_matched_area=self.min_matched_area,
            max_colour_difference=self.max_colour_difference,
            min_density=self.min_density,
            cos_product=self.cos_product,
            near_agreement=self.near_agreement,
            max_hue_turn=self.max_hue_turn_product,
            min_fine_agreement=self.min_fine_agreement,
            max_palette_mismatch=self.max_palette_mismatch,
            near_aligned_share=self.near_aligned_share,
            max_changed_area=self.max_changed_area,
            max_flipped_area=self.max_flipped_area,
            max_shade_change=self.max_shade_change,
            min_artwork_change=self.min_artwork_change,
            max_surface_change=self.max_surface_change,
            cos_look=self.cos_look,
            max_look_mismatch=self.max_look_mismatch,
            look_margin=self.look_margin,
            rival_look_slack=self.rival_look_slack,
        )


@dataclass(frozen=True)
class Assignment:
    """Where one image landed."""

    image_id: str
    group_id: str
    product_id: str
    confidence: float  # 0..1, the weakest link holding the group together (1 for a singleton)
    is_group_centre: bool
    colour: str = ""  # named dominant colour of the group's centre, for colour facets


@dataclass(frozen=True)
class Links:
    """Undirected links between images, with a strength in 0..1 and evidence for each."""

    a: np.ndarray
    b: np.ndarray
    strength: np.ndarray
    evidence: list[dict] = field(default_factory=list)
    #: Same-photo comparisons made without a hash hint, by (i, j) with i < j: the product
    #: level asks the same question of its candidates and reuses them.
    photo_matches: dict[tuple[int, int], PhotoMatch | None] = field(default_factory=dict)
    #: Pairs (i, j), i < j, verified as a variant's twins: never in one group.
    apart: frozenset[tuple[int, int]] = frozenset()
    #: Share of the two images that agrees (all blocks, a patch a copy test excused too;
    #: None: ``strength``): links are joined closest first where twins are kept apart.
    closeness: np.ndarray | None = None


@dataclass
class Grouping:
    """Assignments plus why: the links that made groups and products, and every product
    candidate that was checked (with its verdict), keyed by image ids."""

    assignments: list[Assignment]
    group_links: list[dict]
    product_links: list[dict]
    product_checks: list[dict]


def group_images(
    image_ids: Sequence[str],
    phash_d4: Sequence[Sequence[str]],
    embeddings: np.ndarray,
    params: GroupingParams = GroupingParams(),
    keypoints: Sequence[Keypoints | None] | None = None,
    colours: Sequence[str] | None = None,
) -> list[Assignment]:
    """Group unique images (``image_ids`` are SHA-256 hex, one row each, no repeats).

    ``keypoints`` (optional) enables verification; ``colours`` (optional, the dominant
    colour of each image as hex) names each group's colour.
    """
    grouping = group_with_evidence(image_ids, phash_d4, embeddings, params, keypoints, colours)
    return grouping.assignments


def group_with_evidence(
    image_ids: Sequence[str],
    phash_d4: Sequence[Sequence[str]],
    embeddings: np.ndarray,
    params: GroupingParams = GroupingParams(),
    keypoints: Sequence[Keypoints | None] | None = None,
    colours: Sequence[str] | None = None,
) -> Grouping:
    """:func:`group_images` with the evidence of every link."""
    n = len(image_ids)
    if n == 0:
        return Grouping([], [], [], [])
    if len(set(image_ids)) != n:
        raise ValueError("image_ids must be unique; group duplicate bytes before calling")
    return group_arrays(image_ids, parse_hashes(phash_d4), embeddings, params, keypoints, colours)


def group_arrays(
    image_ids: Sequence[str],
    d4: np.ndarray,
    embeddings: np.ndarray,
    params: GroupingParams = GroupingParams(),
    keypoints: Sequence[Keypoints | None] | None = None,
    colours: Sequence[str] | None = None,
) -> Grouping:
    """:func:`group_with_evidence` on hashes already parsed (``n x 8`` uint64)."""
    n = len(image_ids)
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    links = strict_links(d4, emb, params, keypoints, image_ids)
    centre_of = cut_groups(n, links, emb, params.cos_centre, image_ids)
    centres, group_of = np.unique(centre_of, return_inverse=True)
    graph = link_products(
        group_of, emb, keypoints, params.product_rules(), image_ids, links.photo_matches
    )
    confidence = _confidence(links, group_of, len(centres))
    product_centre = _product_centres(graph.product_of, group_of, centres, image_ids)
    out = []
    for i, image_id in enumerate(image_ids):
        g = group_of[i]
        centre = centres[g]
        out.append(
            Assignment(
                image_id=image_id,
                group_id="g-" + image_ids[centre][:16],
                product_id="p-" + image_ids[product_centre[graph.product_of[g]]][:16],
                confidence=round(float(confidence[g]), 4),
                is_group_centre=bool(i == centre),
                colour=colour_name(colours[centre]) if colours is not None else "",
            )
        )
    kept = [e for e, a, b in zip(links.evidence, links.a, links.b, strict=True)
            if group_of[a] == group_of[b]]  # fmt: skip
    # (a strict link the centre check cut is not evidence for the group)
    return Grouping(sorted(out, key=lambda a: a.image_id), kept, graph.links, graph.checked)


def parse_hashes(phash_d4: Sequence[Sequence[str]]) -> np.ndarray:
    """Hex dihedral hashes to an ``n x 8`` uint64 array."""
    return np.array([[int(h, 16) for h in row] for row in phash_d4], dtype=np.uint64)


def dihedral_distance(d4: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min Hamming distance of each pair over orientations, taken both ways round."""
    return dihedral_match(d4, a, b)[0]


def dihedral_match(d4: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distance and orientation of each pair: ``j`` when turning b by dihedral element j
    matches a, ``-1 - j`` when turning a by j matches b (as :func:`match_photos` takes)."""
    one_way = np.bitwise_count(d4[a, :1] ^ d4[b])
    other_way = np.bitwise_count(d4[b, :1] ^ d4[a])
    first, second = one_way.min(axis=1), other_way.min(axis=1)
    orientation = np.where(first <= second, one_way.argmin(axis=1), -1 - other_way.argmin(axis=1))
    return np.minimum(first, second).astype(np.int64), orientation


def strict_links(
    d4: np.ndarray,
    emb: np.ndarray,
    p: GroupingParams,
    keypoints: Sequence[Keypoints | None] | None = None,
    ids: Sequence[str] | None = None,
) -> Links:
    """Same-photo links from hash neighbours and embedding neighbours."""
    ha, hb, _ = hash_pairs(d4[:, 0], d4, p.hash_sure)
    ea, eb, _ = similar_pairs(emb, p.cos_candidate, k=p.neighbours)
    # A small rotation, an app frame or noise moves the embedding of a copy; its keypoints'
    # descriptors mostly stay (photogroup.descriptor_votes).
    va, vb = _descriptor_candidates(keypoints, p.descriptor_candidates)
    a, b, _ = unique_pairs(np.concatenate([ha, ea, va]), np.concatenate([hb, eb, vb]),
                           np.zeros(len(ha) + len(ea) + len(va)), keep="min")  # fmt: skip
    dist, orientation = dihedral_match(d4, a, b)
    cos = pair_cosines(emb, a, b)
    has_kp = np.array([k is not None for k in keypoints]) if keypoints is not None else None
    verifiable = has_kp[a] & has_kp[b] if has_kp is not None else np.zeros(len(a), bool)
    # Without keypoints, hashes (plus agreeing embeddings) are the best evidence there is.
    by_hash = (dist <= p.hash_sure) | ((dist <= p.hash_loose) & (cos >= p.cos_strict))
    linked = ~verifiable & by_hash
    strength = np.where(linked, 1.0 - dist / 64.0, 0.0)
    closeness = strength.copy()
    evidence = {int(i): {"rule": "hash", "hash_distance": int(dist[i]),
                         "cosine": round(float(cos[i]), 4)}
                for i in np.nonzero(linked)[0]}  # fmt: skip
    photo_matches: dict[tuple[int, int], PhotoMatch | None] = {}
    apart: set[tuple[int, int]] = set()
    todo = np.nonzero(verifiable)[0]
    hints = [int(orientation[i]) if dist[i] <= p.hash_loose else None for i in todo]
    pairs = [(keypoints[a[i]], keypoints[b[i]], hint) for i, hint in zip(todo, hints, strict=True)]
    for i, hint, v in zip(todo, hints, _verified(pairs, p), strict=True):
        if hint is None:
            photo_matches[(int(a[i]), int(b[i]))] = v.match
        if v.apart:
            apart.add((min(int(a[i]), int(b[i])), max(int(a[i]), int(b[i]))))
        if v.judged is not None and v.test is not None:
            m, test = v.judged, v.test
            linked[i] = True
            strength[i] = _strength(m, test)
            closeness[i] = _closeness(m, test)
            evidence[int(i)] = {"rule": "same_photo", "test": test, **m.as_dict(),
                                "hash_distance": int(dist[i]),
                                "cosine": round(float(cos[i]), 4)}  # fmt: skip
            if v.reverse is not None:
                evidence[int(i)]["judged_from"] = "b"
    keep = np.nonzero(linked)[0]
    if ids is None:  # the scale benchmark: no evidence wanted
        out = []
    else:
        out = [{"a": ids[a[i]], "b": ids[b[i]], **evidence[int(i)]} for i in keep]
    return Links(
        a[keep], b[keep], strength[keep], out, photo_matches, frozenset(apart), closeness[keep]
    )


def _strength(m: PhotoMatch, test: str) -> float:
    """How strongly a copy test holds: the agreement it judged by."""
    if test in ("one_patch_differs", "exact_plane"):
        return m.rest_agreement
    return _closeness(m, test)


def _closeness(m: PhotoMatch, test: str) -> float:
    """The share of the two images' blocks that agree, at the resolution ``test`` judged."""
    if test == "shown_smaller":
        return m.coarse_agreement
    return m.soft_agreement if test == "blurred" else m.agreement


@dataclass(frozen=True)
class _Verified:
    """One verified pair: ``match`` (b aligned onto a), its copy test (None: not a copy,
    or a variant's twin; ``resampled`` where only that test holds), ``reverse`` (a
    aligned onto b) when the test held only that way round, and whether the two are kept
    apart (twins whose print turned its hue: ``min_apart_turned_area``)."""

    match: PhotoMatch | None
    test: str | None = None
    reverse: PhotoMatch | None = None
    apart: bool = False

    @property
    def judged(self) -> PhotoMatch | None:
        """The match the copy test judged."""
        return self.reverse if self.reverse is not None else self.match


def _verified(pairs: list[tuple], p: GroupingParams) -> list[_Verified]:
    """:func:`match_photos` of each ``(a, b, hint)`` and what it shows (:class:`_Verified`),
    in order, on every core: the matching, the homographies and the warps run in faiss
    and OpenCV with the GIL released (the 120 phone photos of bench/throughput.py: 1,573
    pairs). Each pair's result depends on its two images only, so the order they run in
    changes nothing."""

    def verify(pair: tuple) -> _Verified:
        a, b, hint = pair
        found = align(a, b)  # one ORB alignment for the match and the twin check
        m = match_photos(a, b, hint, alignment=found)
        test = p.copy_test(m) if m is not None else None
        twin = p.variant_twin(m, a, b, found, test) if test is not None else None
        if twin is not None:
            return _Verified(m, apart=twin.turned_area > p.min_apart_turned_area)
        if test is None and m is not None and p.resampled_copy(m, a, b, found):
            test = "resampled"
        if test is not None or m is None or not p.worth_reversing(m):
            return _Verified(m, test)
        # The other way round: from b's blocks (a's detail b lost does not count).
        back = align(b, a)
        mb = match_photos(b, a, None if hint is None else -1 - hint, alignment=back)
        test = p.reverse_copy_test(mb) if mb is not None else None
        twin = p.variant_twin(mb, b, a, back, test) if test is not None else None
        if twin is not None:
            return _Verified(m, apart=twin.turned_area > p.min_apart_turned_area)
        return _Verified(m, test, mb if test is not None else None)

    threads = min(os.cpu_count() or 1, max(1, len(pairs) // 8))
    if threads == 1:
        return [verify(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(verify, pairs))


def _descriptor_candidates(
    keypoints: Sequence[Keypoints | None] | None, per_image: int
) -> tuple[np.ndarray, np.ndarray]:
    if keypoints is None or per_image <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    own = [k.descriptors if k is not None else None for k in keypoints]
    mirrors = [k.mirror_descriptors if k is not None else None for k in keypoints]
    a, b, _ = descriptor_pairs(own, mirrors, per_image)
    return a, b


def cut_groups(
    n: int, links: Links, emb: np.ndarray, cos_centre: float, ids: Sequence[str]
) -> np.ndarray:
    """Index of each node's group centre (see the module docstring)."""
    centre_of = np.arange(n)
    if links.apart:
        keep = _kept_apart(n, links, ids)
        links = Links(links.a[keep], links.b[keep], links.strength[keep])
    if not len(links.a):
        return centre_of
    graph = coo_array((np.ones(len(links.a)), (links.a, links.b)), shape=(n, n)).tocsr()
    graph = graph + graph.T
    count, component = connected_components(graph, directed=False)
    sizes = np.bincount(component, minlength=count)
    order = np.argsort(component, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    indptr, indices = graph.indptr, graph.indices
    for c in np.nonzero(sizes > 1)[0]:
        members = order[starts[c] : starts[c + 1]]
        if len(members) == 2:
            centre_of[members] = min(members, key=lambda i: ids[i])
            continue
        adjacency = {int(i): set(indices[indptr[i] : indptr[i + 1]].tolist()) for i in members}
        _cut_component(adjacency, emb, cos_centre, ids, centre_of)
    return centre_of


def _cut_component(adjacency, emb, cos_centre, ids, centre_of) -> None:
    remaining = set(adjacency)
    while remaining:
        centre = min(remaining, key=lambda i: (-len(adjacency[i] & remaining), ids[i]))
        group = {centre} | (adjacency[centre] & remaining)
        second = set().union(*(adjacency[i] for i in group)) & remaining - group
        group |= {j for j in second if float(emb[j] @ emb[centre]) >= cos_centre}
        for i in group:
            centre_of[i] = centre
        remaining -= group


def _kept_apart(n: int, links: Links, ids: Sequence[str]) -> np.ndarray:
    """Which links survive keeping variant twins apart: links joined closest first
    (union-find; ``Links.closeness``), each skipped where it would put two images kept
    apart in one part. A copy of a base agrees with its base more closely than with the
    variant it also resembles, so it stays on its base's side. (Not by ``strength``: a
    stickered copy's link to the variant may pass the one-patch test, judged outside the
    patch, and read stronger than its link to the base.)"""
    parent = list(range(n))
    apart_of: dict[int, set[int]] = {}
    for x, y in links.apart:
        apart_of.setdefault(x, set()).add(y)
        apart_of.setdefault(y, set()).add(x)
    # Per part, only its members kept apart from some image: the check costs what the
    # constraints do, not the size of the parts.
    constrained: dict[int, set[int]] = {i: {i} for i in apart_of}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    close = links.closeness if links.closeness is not None else links.strength
    order = sorted(range(len(links.a)), key=lambda k: (-float(close[k]),
                   ids[links.a[k]], ids[links.b[k]]))  # fmt: skip
    keep = np.zeros(len(links.a), bool)
    for k in order:
        ra, rb = root(int(links.a[k])), root(int(links.b[k]))
        if ra != rb:
            mine, theirs = constrained.get(ra, set()), constrained.get(rb, set())
            if any(root(j) == rb for i in mine for j in apart_of[i]):
                continue
            parent[rb] = ra
            if theirs:
                constrained[ra] = mine | constrained.pop(rb)
        keep[k] = True
    return keep


def _confidence(links: Links, group_of: np.ndarray, groups: int) -> np.ndarray:
    """Per group, the weakest of its members' strongest links (1.0 for a singleton)."""
    n = len(group_of)
    best = np.zeros(n)
    inside = group_of[links.a] == group_of[links.b]
    for a, b, s in zip(links.a[inside], links.b[inside], links.strength[inside], strict=True):
        best[a], best[b] = max(best[a], s), max(best[b], s)
    sizes = np.bincount(group_of, minlength=groups)
    confidence = np.ones(groups)
    multi = sizes[group_of] > 1
    np.minimum.at(confidence, group_of[multi], np.clip(best[multi], 0.0, 1.0))
    return confidence


def _product_centres(product_of, group_of, centres, ids) -> dict[int, int]:
    """The image naming each product: the centre of its largest group, then lowest id."""
    sizes = np.bincount(group_of, minlength=len(centres))
    best: dict[int, int] = {}
    for g, root in enumerate(product_of):
        key = (-sizes[g], ids[centres[g]])
        current = best.get(int(root))
        if current is None or key < (-sizes[current], ids[centres[current]]):
            best[int(root)] = g
    return {root: int(centres[g]) for root, g in best.items()}
