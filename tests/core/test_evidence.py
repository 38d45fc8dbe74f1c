"""The evidence column and the `groups --json` listing built from it, on hand-made tables."""

import json

import numpy as np
import pandas as pd

from photogroup.edits import Edit
from photogroup.evidence import (
    EMPTY,
    batch_listing,
    evidence_by_image,
    evidence_counts,
    evidence_line,
    plain,
)
from photogroup.product_groups import edited_groups

S1, S2, S3, S4, S5 = (c * 64 for c in "12345")
FILES = [("mug.jpg", S1, "g1", "p1"), ("mug_2.jpg", S1, "g1", "p1"),  # same bytes
         ("mug-crop.jpg", S2, "g1", "p1"), ("mug-small.jpg", S3, "g1", "p1"),
         ("mug-back.jpg", S4, "g2", "p1"), ("cup-red.jpg", S5, "g3", "p3")]  # fmt: skip
PHOTO = {"rule": "same_photo", "method": "keypoints", "overlap": 0.9, "agreement": 0.95,
         "blocks": 40, "hash_distance": 3, "cosine": 0.99}  # fmt: skip
SURFACE = {"rule": "same_surface", "verdict": "same_surface", "inliers": 80, "keypoints": 300,
           "matched_area": 0.5, "density": 0.4, "colour_difference": 3.0, "inlier_share": 0.27,
           "strength": 0.27, "cosine": 0.9}  # fmt: skip
BACK = {"a": S1, "b": S4, **SURFACE}
EVIDENCE = {
    "group_links": [{"a": S1, "b": S2, **PHOTO, "inliers": np.int64(240)},
                    {"a": S2, "b": S3, **PHOTO, "inliers": 120},
                    {"a": S1, "b": S3, "rule": "hash", "hash_distance": 2, "cosine": 0.98}],
    "product_links": [BACK],
    "product_checks": [BACK,
                       {"a": S4, "b": S5, **SURFACE, "verdict": "colour_differs", "inliers": 40,
                        "colour_difference": 30.0},
                       {"a": S1, "b": S5, **SURFACE, "verdict": "no_shared_surface",
                        "inliers": 5}],
}  # fmt: skip


def clusters(evidence: dict | None = EVIDENCE) -> pd.DataFrame:
    """An image_clusters table as the asset writes it (or, with None, as before evidence)."""
    table = pd.DataFrame(FILES, columns=["file", "sha256", "group_id", "product_id"])
    table = table.assign(key="uploads/t/b/" + table.file, confidence=0.9)
    if evidence is not None:
        table["evidence"] = table.sha256.map(evidence_by_image(plain(evidence))).fillna(EMPTY)
    return table


def listing(table: pd.DataFrame, *edits: Edit) -> tuple[dict, dict]:
    groups, _ = edited_groups(table, list(edits))
    out = batch_listing(table, groups)
    json.dumps(out)  # what the CLI prints
    by_file = {m: g for g in out["groups"] for m in g["members"]}
    return out, by_file


def edit(op: str, **kw) -> Edit:
    return Edit(op=op, who="ana", when="2026-11-22T10:00:00+00:00", **kw)


def test_every_link_is_stored_once_per_image_and_identical_bytes_share_it():
    table = clusters()
    first, copy = table.evidence[table.file == "mug.jpg"].item(), table.evidence[1]
    assert first == copy  # same bytes, same string
    stored = [json.loads(t) for t in table.drop_duplicates("sha256").evidence]
    assert sum(len(s["group_links"]) for s in stored) == 3
    assert sum(len(s["product_checks"]) for s in stored) == 3
    assert json.loads(table.evidence[table.file == "cup-red.jpg"].item()) == json.loads(EMPTY)


def test_groups_and_products_carry_their_links_with_file_names():
    out, by_file = listing(clusters())
    mug = by_file["mug.jpg"]
    assert {(e["a"], e["b"], e["rule"]) for e in mug["evidence"]} == {
        ("mug.jpg", "mug-crop.jpg", "same_photo"),
        ("mug-crop.jpg", "mug-small.jpg", "same_photo"),
        ("mug.jpg", "mug-small.jpg", "hash"),
    }
    crop = next(e for e in mug["evidence"] if e["b"] == "mug-crop.jpg")
    assert (crop["inliers"], crop["agreement"], crop["overlap"]) == (240, 0.95, 0.9)
    assert by_file["mug-back.jpg"]["evidence"] == [] and "same photo" in evidence_line(mug)

    products = {p["product_id"]: p for p in out["products"]}
    assert set(products) == {g["product_id"] for g in out["groups"]} == {"p1", "p3"}
    assert products["p1"]["groups"] == ["g1", "g2"]
    ((link,),) = [products["p1"]["evidence"]]
    assert (link["a"], link["b"], link["inliers"]) == ("mug.jpg", "mug-back.jpg", 80)
    # The variant (40 inliers) is closer than the pair sharing no surface (5).
    closest = products["p1"]["closest_other"]
    assert closest["product_id"] == "p3" and closest["verdict"] == "colour_differs"
    assert (closest["a"], closest["b"], closest["inliers"]) == ("mug-back.jpg", "cup-red.jpg", 40)
    back = products["p3"]["closest_other"]
    assert (back["product_id"], back["a"], back["b"]) == ("p1", "cup-red.jpg", "mug-back.jpg")
    assert "kept_apart_by" not in closest

    counts = evidence_counts(plain(EVIDENCE), dict(zip(clusters().sha256, clusters().product_id,
                                                       strict=True)))  # fmt: skip
    assert counts["group_links_same_photo"] == 2 and counts["group_links_hash"] == 1
    assert counts["product_links_same_surface"] == 1 and counts["product_links_embedding"] == 0
    assert counts["variant_products_kept_apart"] == 1 and counts["product_checks"] == 3


def test_the_closest_other_product_shows_the_check_that_kept_them_apart():
    """A refused same-surface pair has more inliers than the changed print of two other
    members that kept the products apart: the listing names the second as the reason."""
    refused = {"a": S1, "b": S5, **SURFACE, "inliers": 60, "refused": "kept apart"}
    changed = {"a": S4, "b": S5, "rule": "print_change", "verdict": "print_differs",
               "print_change": {"aligned_share": 0.4, "changed_area": 0.15}}  # fmt: skip
    evidence = {**EVIDENCE, "product_checks": [BACK, refused, changed]}
    out, _ = listing(clusters(evidence))
    products = {p["product_id"]: p for p in out["products"]}
    for this, other in (("p1", "p3"), ("p3", "p1")):
        closest = products[this]["closest_other"]
        assert closest["product_id"] == other and closest["verdict"] == "print_differs"
        assert closest["print_change"]["changed_area"] == 0.15
    assert {products["p1"]["closest_other"][end] for end in "ab"} == {"mug-back.jpg", "cup-red.jpg"}


def test_links_that_edits_broke_are_dropped():
    table = clusters()
    out, by_file = listing(table, edit("split", images=(S3,)), edit("move", image=S4, to=(S5,)))
    # Split: only the link between the two images still together holds.
    assert [(e["a"], e["b"]) for e in by_file["mug.jpg"]["evidence"]] == [
        ("mug.jpg", "mug-crop.jpg")
    ]
    assert by_file["mug-small.jpg"]["evidence"] == []
    assert "no links" in evidence_line(by_file["cup-red.jpg"])
    products = {p["product_id"]: p for p in out["products"]}
    assert set(products) == {g["product_id"] for g in out["groups"]}
    assert products[by_file["mug-small.jpg"]["product_id"]]["closest_other"] is None
    # Move: mug-back left product p1, so the product link no longer joins p1's groups; it is
    # now the closest pair to another product, kept apart by the edit.
    assert products["p1"]["groups"] == ["g1"] and products["p1"]["evidence"] == []
    closest = products["p1"]["closest_other"]
    assert (closest["product_id"], closest["a"], closest["b"]) == ("p3", "mug.jpg",
                                                                   "mug-back.jpg")  # fmt: skip
    assert closest["verdict"] == "same_surface" and closest["kept_apart_by"] == "edit"


def test_a_table_from_before_the_evidence_column_lists_without_evidence():
    out, by_file = listing(clusters(evidence=None))
    assert {m for g in out["groups"] for m in g["members"]} == {f for f, *_ in FILES}
    assert all(g["evidence"] == [] for g in out["groups"])
    assert [(p["product_id"], p["evidence"], p["closest_other"]) for p in out["products"]] == [
        ("p1", [], None),
        ("p3", [], None),
    ]
    assert "no links recorded" in evidence_line(by_file["mug.jpg"])


def test_a_look_the_machine_could_not_decide_is_listed_for_people():
    """A same_look link refused because a variant kept apart looks as much like the other
    side: both products name each other as undecided, until people join them."""
    from photogroup.product_links import AMBIGUOUS_LOOK

    look = {"a": S4, "b": S5, "rule": "same_look", "verdict": "same_look", "cosine": 0.91,
            "look_mismatch": 0.04, "refused": AMBIGUOUS_LOOK}  # fmt: skip
    weaker = {**look, "a": S1, "cosine": 0.85}
    other_refusal = {**look, "a": S2, "cosine": 0.95, "refused": "kept apart by a variant"}
    evidence = {**EVIDENCE, "product_checks": [BACK, look, weaker, other_refusal]}
    out, _ = listing(clusters(evidence))
    products = {p["product_id"]: p for p in out["products"]}
    (mine,) = products["p1"]["undecided"]  # one entry per other product: the closest look
    assert (mine["product_id"], mine["a"], mine["b"]) == ("p3", "mug-back.jpg", "cup-red.jpg")
    assert mine["cosine"] == 0.91 and mine["look_mismatch"] == 0.04
    (theirs,) = products["p3"]["undecided"]
    assert (theirs["product_id"], theirs["a"], theirs["b"]) == ("p1", "cup-red.jpg", "mug-back.jpg")
    assert listing(clusters())[0]["products"][0]["undecided"] == []

    out, _ = listing(clusters(evidence), edit("merge", groups=((S4,), (S5,))))
    assert all(p["undecided"] == [] for p in out["products"])


def test_a_look_kept_from_joining_two_products_near_a_variant_is_listed_for_people():
    from photogroup.product_links import LONE_GROUPS_ONLY

    look = {"a": S4, "b": S5, "rule": "same_look", "verdict": "same_look", "cosine": 0.9,
            "look_mismatch": 0.0, "refused": LONE_GROUPS_ONLY}  # fmt: skip
    out, _ = listing(clusters({**EVIDENCE, "product_checks": [BACK, look]}))
    products = {p["product_id"]: p for p in out["products"]}
    assert [u["product_id"] for u in products["p1"]["undecided"]] == ["p3"]
    assert [u["product_id"] for u in products["p3"]["undecided"]] == ["p1"]
