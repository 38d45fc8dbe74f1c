"""What the changed-print check says of every pair of rendered photos in one product line.

Pairs of one product line (originals and edited copies), split into pairs of different
views of one product (a changed print there is a false cannot-link) and variant pairs (one
there keeps a variant apart), counted as flagged at the default thresholds and a few
others around them, by the colour change, the dark-to-lit flip, and either (the rule).
For diagnosis: it chooses nothing.

    .venv/bin/python bench/print_change_pairs.py calibration   # any set of grouping_sets
"""

from __future__ import annotations

import argparse
import itertools

import grouping
from grouping_sets import load_sets

from photogroup import GroupingParams
from photogroup.changed_print import print_change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("set", help="calibration, evaluation, fresh, holdout, holdout2, ...")
    cases = load_sets()[parser.parse_args().set]
    keypoints = grouping.prepare(cases).keypoints
    rendered = [k for k, c in enumerate(cases) if c.rendered]
    changes: dict[str, list] = {"views of one product": [], "variant pairs": []}
    for a, b in itertools.combinations(rendered, 2):
        ca, cb = cases[a], cases[b]
        if ca.base != cb.base or ca.photo == cb.photo:
            continue  # another line, or copies of one photo (the strict level's)
        kind = "views of one product" if ca.product == cb.product else "variant pairs"
        changes[kind].append(print_change(keypoints[a], keypoints[b]))
    rules = GroupingParams().product_rules()
    print(f"defaults: aligned share >= {rules.near_aligned_share}, changed area > "
          f"{rules.max_changed_area} or flipped area > {rules.max_flipped_area}")  # fmt: skip
    measures = {
        "changed": lambda c, area: c.changed_area > area,
        "flipped": lambda c, area: c.flipped_area > area,
        "either": lambda c, area: max(c.changed_area, c.flipped_area) > area,
    }
    for share, area in itertools.product((0.15, rules.near_aligned_share, 0.25), (0.02, 0.05)):
        for measure, hit in measures.items():
            counts = []
            for kind, found in changes.items():
                near = [c for c in found if c is not None and c.aligned_share >= share]
                hits = sum(1 for c in near if hit(c, area))
                counts.append(f"{kind} {hits} of {len(found)}")
            print(f"  share >= {share:.2f}, {measure} area > {area:.2f}: flagged "
                  + ", ".join(counts))  # fmt: skip


if __name__ == "__main__":
    main()
