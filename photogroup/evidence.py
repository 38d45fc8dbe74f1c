"""Why images were grouped: the ``evidence`` column of ``image_clusters`` and the listing
people read (``groups --json``).

The grouping (:func:`photogroup.cluster.group_with_evidence`) returns three lists of links
between images, each a dict with ``a`` and ``b`` (SHA-256s) and the numbers that decided it:

* ``group_links``: the strict links holding each group together (``rule`` ``same_photo``
  or ``hash``);
* ``product_links``: the links that joined strict groups into products (``same_surface``,
  ``same_look`` or ``embedding``);
* ``product_checks``: every verified candidate pair from different strict groups, with its
  ``verdict`` (``same_surface``, ``same_look``, ``colour_differs``, ``artwork_differs``,
  ``print_differs``, ``no_shared_surface``; ``refused`` when a merge was refused).

The table stores, for each image, the links whose ``a`` is that image as one JSON object
``{"group_links": [...], "product_links": [...], "product_checks": [...]}``. Every file with
the same bytes carries the same string, so a reader takes one row per SHA-256 and sees each
link exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from photogroup.edits import Groups
from photogroup.product_links import AMBIGUOUS_LOOK, LONE_GROUPS_ONLY, VARIANT_VERDICTS

KINDS = ("group_links", "product_links", "product_checks")
GROUP_RULES = ("same_photo", "hash")
PRODUCT_RULES = ("same_surface", "same_look", "embedding")
EMPTY = json.dumps({kind: [] for kind in KINDS}, sort_keys=True)


def plain(evidence: Mapping[str, list[dict]]) -> dict[str, list[dict]]:
    """The three lists as plain JSON values (numpy scalars become Python numbers)."""
    text = json.dumps({k: list(evidence.get(k, [])) for k in KINDS}, default=_scalar)
    return json.loads(text)


def _scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def evidence_by_image(evidence: Mapping[str, list[dict]]) -> dict[str, str]:
    """SHA-256 -> the JSON string of the links in which it is ``a`` (images without any
    are absent: give them :data:`EMPTY`)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for kind in KINDS:
        for link in evidence.get(kind, []):
            out.setdefault(link["a"], {k: [] for k in KINDS})[kind].append(link)
    return {sha: json.dumps(lists, sort_keys=True, default=_scalar) for sha, lists in out.items()}


def evidence_counts(evidence: Mapping[str, list[dict]], product_of: Mapping[str, str]) -> dict:
    """Metadata: links per rule, checks, refused merges, and the pairs of products
    (``product_of``: SHA-256 -> product id) kept apart because one was a variant."""
    counts = {f"group_links_{r}": 0 for r in GROUP_RULES}
    counts |= {f"product_links_{r}": 0 for r in PRODUCT_RULES}
    for kind, prefix in (("group_links", "group_links_"), ("product_links", "product_links_")):
        for link in evidence.get(kind, []):
            counts[prefix + link["rule"]] = counts.get(prefix + link["rule"], 0) + 1
    checks = evidence.get("product_checks", [])
    variants = {
        frozenset((product_of[c["a"]], product_of[c["b"]]))
        for c in checks
        if c["verdict"] in VARIANT_VERDICTS and product_of[c["a"]] != product_of[c["b"]]
    }
    return counts | {
        "product_checks": len(checks),
        "merges_refused": sum(1 for c in checks if "refused" in c),
        "variant_products_kept_apart": len(variants),
    }


def table_evidence(clusters: pd.DataFrame) -> dict[str, list[dict]]:
    """The three lists back from a table (one row per SHA-256 read); empty for a table
    written before the column existed."""
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    if "evidence" not in clusters.columns:
        return out
    for text in clusters.drop_duplicates("sha256").evidence:
        if isinstance(text, str) and text:
            for kind, links in json.loads(text).items():
                out.setdefault(kind, []).extend(links)
    return out


def batch_listing(clusters: pd.DataFrame, groups: Groups) -> dict[str, list[dict]]:
    """``{"groups": [...], "products": [...]}`` of ``groups --json``: the groups after
    people's edits with the links holding each together, and each product with the links
    joining its groups and the closest other product (see the README's ``groups``)."""
    first = clusters.groupby("sha256").file.min().to_dict()  # a link names a file per sha
    evidence = table_evidence(clusters)
    # Edits move images, so a machine link is kept only where both its ends still are in
    # one group (group links) or one product (product links); the rest no longer hold.
    group_links: dict[str, list[dict]] = {}
    for link in evidence["group_links"]:
        if link["a"] in first and link["b"] in first:
            ga, gb = groups.group_of[link["a"]], groups.group_of[link["b"]]
            if ga == gb:
                group_links.setdefault(ga, []).append(_named(link, first))
    listing = _group_listing(clusters, groups)
    for g in listing:
        g["evidence"] = group_links.get(g["group_id"], [])
    product_of = {sha: groups.product_of[groups.group_of[sha]] for sha in first}
    machine = dict(zip(clusters.sha256, clusters.product_id, strict=True))
    return {"groups": listing, "products": _products(listing, evidence, product_of, first,
                                                     machine)}  # fmt: skip


def _group_listing(clusters: pd.DataFrame, groups: Groups) -> list[dict]:
    files: dict[str, list[str]] = {}
    for sha, file in zip(clusters.sha256, clusters.file, strict=True):
        files.setdefault(groups.group_of[sha], []).append(file)
    # The machine's confidence holds for groups edits left as they were; others get None.
    machine = clusters.groupby("group_id").agg(
        files=("file", sorted), confidence=("confidence", "min")
    )
    # Plain dicts: a pandas look-up per group costs ~0.1 ms, a lot at 2,000 groups a page.
    machine_files, confidence = machine.files.to_dict(), machine.confidence.to_dict()
    return [
        {
            "group_id": group_id,
            "product_id": groups.product_of[group_id],
            "name": groups.names.get(group_id),
            "confidence": round(float(confidence[group_id]), 4)
            if machine_files.get(group_id) == sorted(members)
            else None,
            "members": sorted(members),
        }
        for group_id, members in sorted(files.items())
    ]


def _products(listing, evidence, product_of, first, machine) -> list[dict]:
    products: dict[str, dict] = {}
    for g in listing:
        entry = products.setdefault(g["product_id"], {"product_id": g["product_id"],
                                                      "groups": [], "evidence": [],
                                                      "closest_other": None,
                                                      "undecided": []})  # fmt: skip
        entry["groups"].append(g["group_id"])
    known = [c for c in evidence["product_links"] if c["a"] in first and c["b"] in first]
    for link in known:
        if product_of[link["a"]] == product_of[link["b"]]:
            products[product_of[link["a"]]]["evidence"].append(_named(link, first))
    best: dict[str, tuple] = {}
    reasons: dict[tuple[str, str], tuple] = {}  # (product, other) -> its strongest variant check
    for check in evidence["product_checks"]:
        a, b = check["a"], check["b"]
        if a not in first or b not in first or product_of[a] == product_of[b]:
            continue
        rank = (check.get("inliers", 0), check.get("cosine", 0.0))
        for this, other in ((a, b), (b, a)):
            if product_of[this] not in best or rank > best[product_of[this]][0]:
                best[product_of[this]] = (rank, this, other, check)
            pair = (product_of[this], product_of[other])
            if check["verdict"] in VARIANT_VERDICTS and (
                pair not in reasons or rank > reasons[pair][0]
            ):
                reasons[pair] = (rank, this, other, check)
    for product_id, entry in _undecided(evidence, product_of, first).items():
        products[product_id]["undecided"] = entry
    for product_id, chosen in best.items():
        # The closest other product, and the check that kept the two apart if one did (a
        # changed print on another pair of members can be what decided, with fewer inliers).
        _, this, other, check = reasons.get((product_id, product_of[chosen[2]]), chosen)
        closest = {"product_id": product_of[other], "a": first[this], "b": first[other],
                   "verdict": check["verdict"], **_numbers(check)}  # fmt: skip
        if machine[this] == machine[other]:
            closest["kept_apart_by"] = "edit"  # the machine had them in one product
        products[product_id]["closest_other"] = closest
    return [products[p] for p in sorted(products)]


def _undecided(evidence, product_of, first) -> dict[str, list[dict]]:
    """Per product, the other products a photo of it looks as much like as a variant kept
    apart does, or that a look near a variant would have joined to it: the machine left
    them apart for a person to decide (closest look first)."""
    best: dict[tuple[str, str], dict] = {}
    for check in evidence["product_checks"]:
        a, b = check["a"], check["b"]
        undecided = check.get("refused") in (AMBIGUOUS_LOOK, LONE_GROUPS_ONLY)
        if not undecided or a not in first or b not in first:
            continue
        if product_of[a] == product_of[b]:
            continue  # people joined them since
        for this, other in ((a, b), (b, a)):
            pair = (product_of[this], product_of[other])
            if pair not in best or check["cosine"] > best[pair]["cosine"]:
                best[pair] = {"product_id": product_of[other], "a": first[this],
                              "b": first[other], "cosine": check["cosine"],
                              "look_mismatch": check.get("look_mismatch")}  # fmt: skip
    out: dict[str, list[dict]] = {}
    for (product_id, _), entry in sorted(best.items(), key=lambda kv: -kv[1]["cosine"]):
        out.setdefault(product_id, []).append(entry)
    return out


def _named(link: dict, first: Mapping[str, str]) -> dict:
    """The link with its ends given as file names (the first file of those bytes)."""
    return {"a": first[link["a"]], "b": first[link["b"]], "rule": link["rule"],
            **_numbers(link)}  # fmt: skip


def _numbers(link: dict) -> dict:
    return {k: v for k, v in link.items() if k not in ("a", "b")}


def evidence_line(group: dict, shown: int = 2) -> str:
    """One short line for people: the group's links, weakest first."""
    links = sorted(group["evidence"], key=lambda e: e.get("agreement", 1.0))
    parts = [_short(e) for e in links[:shown]]
    more = f" (+{len(links) - shown} more)" if len(links) > shown else ""
    if parts:
        return "; ".join(parts) + more
    if len(group["members"]) == 1:
        return "single photo"
    return "no links recorded (identical bytes, an edit, or grouped before evidence was kept)"


def _short(e: dict) -> str:
    line = _short_line(e)
    if e.get("judged_from") == "b":
        # The copy tests failed with a's blocks and one held with b's (GroupingParams).
        line += f" (judged by {e['b']}'s blocks)"
    return line


def _short_line(e: dict) -> str:
    if e["rule"] == "same_photo" and e.get("test") == "one_patch_differs":
        numbers = f"outside it agreement {e.get('rest_agreement', 0):.2f}"
        return f"{e['a']} ~ {e['b']}: same photo, one patch differs (a sticker or tag), {numbers}"
    if e["rule"] == "same_photo" and e.get("test") == "exact_plane":
        numbers = f"{e.get('inliers', 0)} inliers, residual {e.get('residual', 0):.5f}"
        return f"{e['a']} ~ {e['b']}: same photo edited in place (stickers, text), {numbers}"
    if e["rule"] == "same_photo" and e.get("test") == "shown_smaller":
        numbers = f"agreement at its resolution {e.get('coarse_agreement', 0):.2f}"
        return f"{e['a']} ~ {e['b']}: same photo shown smaller (screenshot, thumbnail), {numbers}"
    if e["rule"] == "same_photo" and e.get("test") == "blurred":
        numbers = f"agreement at one sharpness {e.get('soft_agreement', 0):.2f}"
        return f"{e['a']} ~ {e['b']}: same photo blurred or noisy, {numbers}"
    if e["rule"] == "same_photo" and e.get("test") == "resampled":
        numbers = f"agreement {e.get('agreement', 0):.2f}, print unchanged"
        return f"{e['a']} ~ {e['b']}: same photo resampled (blur, scale, frame), {numbers}"
    if e["rule"] == "same_photo":
        numbers = f"overlap {e.get('overlap', 0):.2f}, agreement {e.get('agreement', 0):.2f}"
        return f"{e['a']} ~ {e['b']}: same photo, {e.get('inliers', 0)} inliers, {numbers}"
    return f"{e['a']} ~ {e['b']}: {e['rule']}, pHash {e.get('hash_distance')} bits"
