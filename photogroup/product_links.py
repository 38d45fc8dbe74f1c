"""Product level: which strict groups show the same product.

Embedding neighbours propose candidate pairs of photos from different strict groups; each
is verified by :func:`photogroup.views.surface_match`. A pair whose surfaces correspond
and agree in colour and artwork links its two groups; a pair whose surfaces correspond but
whose colour or artwork differs is a variant, and keeps its two groups apart for good
(a cannot-link). Links are then merged strongest first, and a merge that would join two
groups kept apart is refused, so look-alikes cannot chain into one product through a third
photo (single-link components would).

A pair with no shared surface whose embeddings are close and whose whole packs carry the
same colours (:mod:`photogroup.looks`) is a ``same_look`` link: views too far apart to
share a surface. It is weaker evidence, merged after every surface link, closest first,
and refused where it is ambiguous: when a product kept apart from one side (a variant)
looks nearly as much like the other side, in embedding and colours, the look cannot say
which of the two it is. Near a variant that lacks the look's colours, a look only attaches
a lone strict group to a product.

Photos without surface keypoints fall back to the embedding: groups whose centroids have a
cosine of at least ``cos_product``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from photogroup.changed_print import PrintChange, print_change
from photogroup.embed import l2_normalise
from photogroup.looks import colours_lacking, look_colours, look_mismatch
from photogroup.neighbours import pair_cosines, similar_pairs
from photogroup.surface_print import surface_print_change
from photogroup.verify import Keypoints, PhotoMatch, align, match_photos
from photogroup.views import SurfaceMatch, surface_match

#: Verdicts of a pair showing one surface in another colour or artwork, or one angle with
#: its print changed: a variant, which keeps its two groups in different products.
VARIANT_VERDICTS = ("colour_differs", "artwork_differs", "print_differs")
#: Verdict of a pair without a shared surface that looks alike (embedding and colours).
SAME_LOOK = "same_look"
#: Why a ``same_look`` link was refused when its look cannot tell two products apart.
AMBIGUOUS_LOOK = "a product kept apart from one looks as much like the other"
#: Why a ``same_look`` link was refused when only a colour variant stood in its way.
LONE_GROUPS_ONLY = "a variant is near: a look only attaches a lone strict group to a product"


#: Members of each group compared for a changed print before two groups are linked.
PRINT_MEMBERS = 3


@dataclass(frozen=True)
class ProductRules:
    """The product-level thresholds (fields of ``GroupingParams``)."""

    neighbours: int
    cos_candidate: float
    pairs_per_groups: int
    min_inliers: int
    min_inlier_share: float
    min_matched_area: float
    max_colour_difference: float
    min_density: float
    cos_product: float
    near_agreement: float
    max_hue_turn: float
    min_fine_agreement: float
    max_palette_mismatch: float
    near_aligned_share: float
    max_changed_area: float
    max_flipped_area: float
    max_shade_change: float
    min_artwork_change: float
    max_surface_change: float
    cos_look: float
    max_look_mismatch: float
    look_margin: float
    rival_look_slack: float

    def near_angle(self, m: PhotoMatch) -> bool:
        """One homography aligns most of the two shots: nearly the same angle."""
        return m.overlap >= 0.5 and m.agreement >= self.near_agreement

    def aligned_verdict(self, m: PhotoMatch) -> str:
        if m.hue_turn > self.max_hue_turn:
            return "colour_differs"
        if m.fine_agreement < self.min_fine_agreement:
            return "artwork_differs"
        return "same_surface"

    def print_changed(self, c: PrintChange | None) -> bool:
        """Nearly the same angle (one homography holds for many keypoints) and one region's
        colours changed, a dark print became a lit one, or a region's grey level changed (an
        illustration redrawn in the same inks): another flavour, artwork or colour of the
        pack."""
        return (
            c is not None
            and c.aligned_share >= self.near_aligned_share
            and (
                c.changed_area > self.max_changed_area
                or c.flipped_area > self.max_flipped_area
                or c.shade_area > self.max_shade_change
            )
        )

    def print_moved(self, c: PrintChange) -> bool:
        """Some region of the print changed at all (however few keypoints one homography
        holds for): what a block disagreement needs before it means another design. An
        edited copy or a resampled shot disagrees block by block with its print unchanged."""
        return max(c.changed_area, c.flipped_area) > self.min_artwork_change

    def surface_changed(self, c: PrintChange) -> bool:
        """Two angles laid onto each other by their matches (:mod:`photogroup.surface_print`)
        and a region of the print changed colour, or went from dark to lit."""
        return max(c.changed_area, c.flipped_area) > self.max_surface_change

    def verdict(self, m: SurfaceMatch) -> str:
        """``same_surface``, ``colour_differs``, ``artwork_differs`` or ``no_shared_surface``
        (``print_differs`` comes from :meth:`print_changed`)."""
        geometry = (
            m.inliers >= self.min_inliers
            and m.inlier_share >= self.min_inlier_share
            and m.matched_area >= self.min_matched_area
        )
        if not geometry:
            return "no_shared_surface"
        if m.colour_difference > self.max_colour_difference or m.hue_turn > self.max_hue_turn:
            return "colour_differs"
        if m.density < self.min_density or m.palette_mismatch > self.max_palette_mismatch:
            return "artwork_differs"
        return "same_surface"


@dataclass
class ProductGraph:
    """Result: the product (an index) of each group, and the evidence."""

    product_of: np.ndarray  # group index -> product root (a group index)
    links: list[dict]  # the links that joined groups, with their evidence
    checked: list[dict]  # every verified candidate pair between groups, with its verdict


def link_products(
    group_of: np.ndarray,
    emb: np.ndarray,
    keypoints: Sequence[Keypoints | None] | None,
    rules: ProductRules,
    ids: Sequence[str],
    photo_matches: Mapping[tuple[int, int], PhotoMatch | None] | None = None,
) -> ProductGraph:
    """Product of each strict group (``group_of`` maps image -> group index 0..g-1).
    ``photo_matches``: same-photo comparisons the strict level already made (no hint)."""
    groups = int(group_of.max()) + 1 if len(group_of) else 0
    if keypoints is None or all(k is None for k in keypoints):
        return _by_centroids(group_of, groups, emb, rules, ids)
    pairs = _candidates(group_of, emb, rules)
    known = photo_matches or {}
    checked = [_check(a, b, emb, keypoints, rules, ids, known) for a, b in pairs]
    by_pair: dict[tuple[int, int], list[dict]] = {}
    for c in checked:
        by_pair.setdefault(_key(group_of[c["_a"]], group_of[c["_b"]]), []).append(c)
    checked += _print_checks(group_of, keypoints, rules, ids, by_pair)
    positive, looks, apart = [], [], set()
    for pair, results in by_pair.items():
        same = [r for r in results if r["verdict"] == "same_surface"]
        if any(_print_differs(r) for r in results):
            # The closest evidence there is: the same angle, and the print changed. Another
            # pair of the two groups matching on what the two packs share does not undo it.
            apart.add(pair)
        elif any(_surface_differs(r) for r in results) and not any(map(_same_print, same)):
            # The print changed between two angles, and no pair of the two groups whose
            # print was compared showed it unchanged (which would make the change a
            # sticker or a watermark on one copy).
            apart.add(pair)
        elif same:
            positive.append((max(r["strength"] for r in same), pair, max(same, key=_strength)))
        elif any(r["verdict"] in VARIANT_VERDICTS for r in results):
            apart.add(pair)
        elif alike := [r for r in results if r["verdict"] == SAME_LOOK]:
            best = max(alike, key=_cosine)
            looks.append((best["cosine"], pair, best))
    products = _Products(groups, apart)
    links = _merge(products, positive)
    if looks:
        claims = _rival_claims(group_of, emb, keypoints, rules.rival_look_slack)
        links += _merge_looks(products, looks, claims, rules.look_margin)
    product_of = products.product_of()
    for c in checked:
        del c["_a"], c["_b"]
    return ProductGraph(product_of, links, checked)


def _print_differs(r: dict) -> bool:
    """A changed print from nearly one angle (one homography)."""
    return r["verdict"] == "print_differs" and "surface_print" not in r


def _surface_differs(r: dict) -> bool:
    """A changed print between two angles (laid by the matches: surface_print)."""
    return r["verdict"] == "print_differs" and "surface_print" in r


def _same_print(r: dict) -> bool:
    """A same-surface pair whose print was compared and agreed."""
    return "aligned" in r or "surface_print" in r


def _strength(r: dict) -> float:
    return r["strength"]


def _cosine(r: dict) -> float:
    return r["cosine"]


def _key(x, y) -> tuple[int, int]:
    return (int(min(x, y)), int(max(x, y)))


def _candidates(group_of: np.ndarray, emb: np.ndarray, rules: ProductRules):
    """Image pairs from different groups among embedding neighbours, at most
    ``pairs_per_groups`` (the most similar) for each pair of groups."""
    a, b, cos = similar_pairs(emb, rules.cos_candidate, k=rules.neighbours)
    different = group_of[a] != group_of[b]
    a, b, cos = a[different], b[different], cos[different]
    taken: dict[tuple[int, int], int] = {}
    for i in np.argsort(-cos, kind="stable"):
        key = _key(group_of[a[i]], group_of[b[i]])
        if taken.get(key, 0) < rules.pairs_per_groups:
            taken[key] = taken.get(key, 0) + 1
            yield int(a[i]), int(b[i])


def _check(a: int, b: int, emb, keypoints, rules: ProductRules, ids, known) -> dict:
    cosine = round(float(pair_cosines(emb, np.array([a]), np.array([b]))[0]), 4)
    ka = keypoints[a] if keypoints is not None else None
    kb = keypoints[b] if keypoints is not None else None
    base = {"a": ids[a], "b": ids[b], "_a": a, "_b": b, "cosine": cosine}
    if ka is None or kb is None or ka.surface_xy is None or kb.surface_xy is None:
        verdict = "same_surface" if cosine >= rules.cos_product else "no_shared_surface"
        return {**base, "rule": "embedding", "verdict": verdict, "strength": cosine}
    m, inliers = surface_match(ka, kb)
    verdict = rules.verdict(m)
    # One ORB alignment of the pair serves both checks below (neither needs it when the
    # surfaces already tell a variant).
    found = align(ka, kb) if verdict in ("same_surface", "no_shared_surface") else None
    blocks_disagree = False
    if verdict == "same_surface":
        if (a, b) in known:
            aligned = known[(a, b)]
        else:
            aligned = match_photos(ka, kb, alignment=found) if found is not None else None
        if aligned is not None and rules.near_angle(aligned):
            # Shot from nearly the same angle: the print can be compared block by block.
            # That tells a colour variant by its hue turn; another design only where its
            # print disagrees at close correlation and a region of it changed (below).
            verdict = rules.aligned_verdict(aligned)
            base["aligned"] = aligned.as_dict()
            blocks_disagree = verdict == "artwork_differs"
    if (verdict in ("same_surface", "no_shared_surface") or blocks_disagree) and found is not None:
        # Whatever the surface keypoints said: shot from nearly the same angle with one
        # region's print changed is a variant, and keeps the two apart.
        change = print_change(ka, kb, alignment=found, shades=True)
        if change is not None:
            base["print_change"] = change.as_dict()
            if rules.print_changed(change):
                verdict = "print_differs"
            elif blocks_disagree and not rules.print_moved(change):
                # Blocks disagree, yet no region of the print changed: a copy the strict
                # level missed (a screenshot, blur, a watermark) or a resampled shot.
                verdict = "same_surface"
    if verdict == "same_surface" and "aligned" not in base:
        # Another angle: the matches lay one print onto the other piece by piece, and a
        # region enclosed by them that changed colour is artwork that changed. As with a
        # changed print from one angle, another pair of the two groups matching on what
        # the packs share does not undo it.
        change = None if inliers is None else surface_print_change(ka, kb, *inliers)
        if change is not None:
            base["surface_print"] = change.as_dict()
            if rules.surface_changed(change):
                verdict = "print_differs"
    if verdict == "no_shared_surface" and cosine >= rules.cos_look:
        mismatch = look_mismatch(ka, kb)
        if mismatch is not None:
            base["look_mismatch"] = round(mismatch, 4)
            if mismatch <= rules.max_look_mismatch:
                verdict = SAME_LOOK
    rule = SAME_LOOK if verdict == SAME_LOOK else "same_surface"
    return {**base, "rule": rule, "verdict": verdict,
            "strength": round(m.inlier_share, 4), **m.as_dict()}  # fmt: skip


def _print_checks(group_of, keypoints, rules: ProductRules, ids, by_pair) -> list[dict]:
    """For each pair of groups about to be linked, their members compared for a changed
    print (:func:`photogroup.changed_print.print_change`), the ``PRINT_MEMBERS`` with the
    most keypoints of each: the candidate pairs are the closest embeddings, often edited
    copies (a padded or rotated copy aligns fewer keypoints), while the shots from nearly
    the same angle that tell a variant may be other members. The first changed print
    found is added to the pair's results (and returned)."""
    members: dict[int, list[int]] = {}
    for i in np.argsort([-len(k.xy) if k is not None else 0 for k in keypoints], kind="stable"):
        members.setdefault(int(group_of[i]), []).append(int(i))
    added = []
    for pair, results in by_pair.items():
        verdicts = {r["verdict"] for r in results}
        if "same_surface" not in verdicts or any(map(_print_differs, results)):
            continue  # not about to be linked, or kept apart already
        seen = {frozenset((r["_a"], r["_b"])) for r in results}
        tried = (
            (a, b)
            for a in members[pair[0]][:PRINT_MEMBERS]
            for b in members[pair[1]][:PRINT_MEMBERS]
            if frozenset((a, b)) not in seen and keypoints[a] is not None
            and keypoints[b] is not None
        )  # fmt: skip
        for a, b in tried:
            change = print_change(keypoints[a], keypoints[b], shades=True)
            if change is not None and rules.print_changed(change):
                check = {"a": ids[a], "b": ids[b], "_a": a, "_b": b, "rule": "print_change",
                         "verdict": "print_differs", "print_change": change.as_dict()}  # fmt: skip
                results.append(check)
                added.append(check)
                break
    return added


class _Products:
    """Strict groups joined into products (union-find), with the groups each product must
    stay apart from (the variant checks' cannot-links)."""

    def __init__(self, groups: int, apart: set) -> None:
        self.parent = list(range(groups))
        self.members = {g: [g] for g in range(groups)}  # root -> its groups
        self.banned: dict[int, set[int]] = {g: set() for g in range(groups)}  # root -> groups
        for x, y in apart:
            self.banned[x].add(y)
            self.banned[y].add(x)

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def kept_apart(self, r: int) -> set[int]:
        """The products (roots) product ``r`` must not join."""
        return {self.root(g) for g in self.banned[r]}

    def join(self, rx: int, ry: int) -> None:
        self.parent[ry] = rx
        self.banned[rx] |= self.banned.pop(ry)
        self.members[rx] += self.members.pop(ry)

    def product_of(self) -> np.ndarray:
        return np.array([self.root(g) for g in range(len(self.parent))], dtype=np.int64)


def _merge(products: _Products, candidates: list, ambiguous=None) -> list[dict]:
    """Join products along candidate links (strength, (group, group), evidence), strongest
    first, unless two groups kept apart would end up in one product, or ``ambiguous``
    (strength, root, root, (group, group)) gives a reason to refuse the link."""
    links = []
    for strength, (x, y), evidence in sorted(candidates, key=lambda p: (-p[0], p[1])):
        rx, ry = products.root(x), products.root(y)
        if rx == ry:
            continue
        if ry in products.kept_apart(rx):
            reason = "would join products kept apart by a variant check"
        else:
            reason = ambiguous(strength, rx, ry, (x, y)) if ambiguous else None
        if reason:
            evidence["refused"] = reason
            continue
        products.join(rx, ry)
        links.append(evidence)
    return links


def _merge_looks(products: _Products, looks: list, claims, margin: float) -> list[dict]:
    """:func:`_merge` for ``same_look`` pairs (cosine first), also refusing a link when a
    product kept apart from one side could claim the other side as well (``claims``, see
    :func:`_rival_claims`, within ``margin`` of the link's cosine): the look cannot tell
    which of the two it is. A rival set aside only because it lacks the look's colours (a
    colour variant) still says variants are near, and another one with the same inks (an
    artwork variant, not kept apart) may be what the look found: such a link only attaches
    a lone strict group, it never joins two products."""
    evidence_of = {pair: evidence for _, pair, evidence in looks}

    def ambiguous(cosine: float, rx: int, ry: int, pair) -> str | None:
        apart_x, apart_y = products.kept_apart(rx), products.kept_apart(ry)
        rivals = [(z, ry) for z in apart_x - apart_y] + [(z, rx) for z in apart_y - apart_x]
        members, floor = products.members, cosine - margin
        own = evidence_of[pair].get("look_mismatch", 0.0)
        verdicts = {claims(members[z], members[w], floor, own) for z, w in rivals}
        if CLAIMS in verdicts:
            return AMBIGUOUS_LOOK
        if LACKS_COLOURS in verdicts:
            if min(len(members[rx]), len(members[ry])) > 1:
                return LONE_GROUPS_ONLY
            # Made, but weaker than a look with no variant near: reviewers see why.
            evidence_of[pair]["near_colour_variant"] = True
        return None

    return _merge(products, looks, ambiguous)


#: What :func:`_rival_claims` finds of a rival and a side.
CLAIMS, LACKS_COLOURS, UNLIKE = "claims", "lacks_colours", "unlike"


#: Closest image pairs of a rival and a side whose colours are compared (bounds the work
#: for large products; the closest pairs are the ones a claim would come through).
RIVAL_PAIRS = 16


def _rival_claims(group_of: np.ndarray, emb: np.ndarray, keypoints, slack: float):
    """Whether a rival (a list of groups) looks as much like a side (another list) as the
    link does: ``CLAIMS`` through an image pair with an embedding cosine of at least
    ``floor`` whose colours match about as well as the link's (one lacks at most ``slack``
    more of the other's coloured pixels than the link's ``own`` mismatch, or either has too
    few to tell); ``LACKS_COLOURS`` when such pairs exist but none of the ``RIVAL_PAIRS``
    closest has the colours (a variant in other colours cannot claim a shot whose colours
    it lacks, however alike the embeddings); ``UNLIKE`` otherwise. ``slack`` >= 1 compares
    no colours: any close pair claims."""
    unit = l2_normalise(emb)
    order = np.argsort(group_of, kind="stable")
    starts = np.searchsorted(group_of[order], np.arange(int(group_of.max()) + 2))
    colours: dict[int, tuple | None] = {}  # image -> look_colours, computed once

    def images(groups: list[int]) -> np.ndarray:
        return np.concatenate([order[starts[g] : starts[g + 1]] for g in groups])

    def colours_of(i: int):
        if i not in colours:
            colours[i] = look_colours(keypoints[i]) if keypoints[i] is not None else None
        return colours[i]

    def colours_match(i: int, j: int, own: float) -> bool:
        if slack >= 1.0:
            return True
        ci, cj = colours_of(i), colours_of(j)
        return ci is None or cj is None or colours_lacking(ci, cj) <= own + slack

    def claims(rival: list[int], side: list[int], floor: float, own: float) -> str:
        ia, ib = images(rival), images(side)
        # In float64, as the link's cosine and the floor are.
        cos = (unit[ia] @ unit[ib].T).astype(np.float64)
        close = np.flatnonzero(cos >= floor)
        if not len(close):
            return UNLIKE
        closest = close[np.argsort(-cos.ravel()[close], kind="stable")][:RIVAL_PAIRS]
        pairs = zip(*np.unravel_index(closest, cos.shape), strict=True)
        if any(colours_match(int(ia[x]), int(ib[y]), own) for x, y in pairs):
            return CLAIMS
        return LACKS_COLOURS

    return claims


def _by_centroids(group_of, groups: int, emb, rules: ProductRules, ids) -> ProductGraph:
    """Without keypoints (no pixels were analysed): groups whose embedding centroids have a
    cosine of at least ``cos_product``, cut with the centre check of strict groups.
    Vectorised: a million images group in about a minute."""
    from scipy.sparse import csr_array

    from photogroup.cluster import Links, cut_groups

    membership = csr_array(
        (np.ones(len(group_of), dtype=np.float32), (group_of, np.arange(len(group_of)))),
        shape=(groups, len(group_of)),
    )
    centroids = np.asarray(membership @ emb, dtype=np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    a, b, cos = similar_pairs(centroids, rules.cos_product, k=rules.neighbours)
    # Each group is named by its first image, as ids name images.
    first = np.full(groups, len(group_of), dtype=np.int64)
    np.minimum.at(first, group_of, np.arange(len(group_of)))
    names = [ids[i] for i in first]
    product_of = cut_groups(groups, Links(a, b, cos), centroids, rules.cos_product, names)
    links = [{"a": names[x], "b": names[y], "rule": "embedding", "verdict": "same_surface",
              "cosine": round(float(c), 4), "strength": round(float(c), 4)}
             for x, y, c in zip(a, b, cos, strict=True)
             if product_of[x] == product_of[y]]  # fmt: skip
    return ProductGraph(np.asarray(product_of, dtype=np.int64), links, [])
