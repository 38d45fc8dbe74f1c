"""Which test made each false strict link on one labelled set, with its evidence.

For diagnosis: it scores nothing and chooses nothing. Default parameters.

    .venv/bin/python bench/false_links.py fresh      # any set of grouping_sets.load_sets()
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter

import grouping
from grouping_sets import load_sets

import photogroup.cluster as cluster
from photogroup import GroupingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("set", help="calibration, evaluation, fresh, holdout, holdout2, ...")
    cases = load_sets()[parser.parse_args().set]
    prepared = grouping.prepare(cases)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(cases))]
    case_of = dict(zip(ids, cases, strict=True))
    found = cluster.group_with_evidence(
        ids, [f.phash_d4 for f in prepared.features], prepared.embeddings, GroupingParams(),
        keypoints=prepared.keypoints,
    )  # fmt: skip
    true, false = Counter(), Counter()
    for link in found.group_links:
        a, b = case_of[link["a"]], case_of[link["b"]]
        test = f"{link.get('rule')}/{link.get('test', '-')}"
        if a.photo == b.photo:
            true[test] += 1
            continue
        false[test] += 1
        evidence = {k: v for k, v in link.items() if k not in ("a", "b")}
        print(f"false: {a.photo} ({a.family}) ~ {b.photo} ({b.family}) {evidence}")
    print(f"true links by test: {dict(true)}")
    print(f"false links by test: {dict(false)}")


if __name__ == "__main__":
    main()
