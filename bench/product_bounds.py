"""Where the product level loses recall: product figures on the calibration seeds as the
grouping makes them, and again with some of its decisions taken from the labels.

    .venv/bin/python bench/product_bounds.py [FIELD=VALUE ...]

Rows per set (``grouping_sets.load_calibration_seeds``: calibration's renders under three
seeds; no reported set is read):

* ``as is``: ``GroupingParams()`` (with any ``FIELD=VALUE`` on top).
* ``looks right``: every ``same_look`` check between two products dropped, and no
  ``same_look`` link refused as ambiguous: what a look test that never mistook a variant
  for its base would give.
* ``checks right``: besides, every checked candidate pair between groups of one product
  linked (a variant verdict or changed print between them dropped), and every
  ``same_surface`` verdict between two products dropped: the ceiling of
  verifying better the pairs the embeddings propose (what is still missing comes from
  candidate generation and the strict groups).

Labels decide nothing in the grouping itself: this prints bounds to choose work by, never
a figure to report.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence

import grouping
from ablation import settings
from grouping_sets import Case, evaluate, load_calibration_seeds

from photogroup import GroupingParams
from photogroup import product_links as links

MODES = ("as is", "looks right", "checks right")


@contextlib.contextmanager
def decided(mode: str, product: Sequence[str]) -> Iterator[None]:
    """Within the block, the product level's checks of image pairs (indices) take the
    labels ``product`` into account as ``mode`` says."""
    check, merge_looks, print_checks = links._check, links._merge_looks, links._print_checks

    def labelled_check(a, b, *args):
        r = check(a, b, *args)
        same = product[a] == product[b]
        if r["verdict"] == links.SAME_LOOK and not same:
            r["verdict"] = "no_shared_surface"
        if mode == "checks right":
            if same and r["verdict"] not in ("same_surface", links.SAME_LOOK):
                r["verdict"] = links.SAME_LOOK
            elif not same and r["verdict"] == "same_surface":
                r["verdict"] = "no_shared_surface"
        return r

    def labelled_print_checks(*args):
        added = print_checks(*args)
        for r in added:  # the dicts are in the pairs' results too
            if product[r["_a"]] == product[r["_b"]]:
                r["verdict"] = "no_shared_surface"
        return added

    if mode == "checks right":
        links._print_checks = labelled_print_checks
    if mode != "as is":
        links._check = labelled_check
        links._merge_looks = lambda products, looks, _likeness, _margin: links._merge(
            products, looks
        )
    try:
        yield
    finally:
        links._check, links._merge_looks, links._print_checks = check, merge_looks, print_checks


def row(cases: list[Case], prepared: grouping.Prepared, params: GroupingParams, mode: str):
    product = [c.product for c in cases]
    with decided(mode, product):
        r = evaluate(cases, *grouping.ours(prepared, params))
    return r["product"], r["variant_merges"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("settings", nargs="*", metavar="FIELD=VALUE")
    args = parser.parse_args()
    params = GroupingParams(**settings(args.settings))
    grouping.remember_verifications()
    print(f"{'set':13s} {'decisions':13s} product P / R / F1, variant pairs merged")
    for name, cases in load_calibration_seeds().items():
        prepared = grouping.prepare(cases)
        for mode in MODES:
            p, variants = row(cases, prepared, params, mode)
            print(f"{name:13s} {mode:13s} {p['precision']:.3f} / {p['recall']:.3f} / "
                  f"{p['f1']:.3f}, {100 * variants:4.1f} %", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
