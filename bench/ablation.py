"""What one grouping setting does, on every set: the same files grouped with ``--base``
settings and again with ``--set`` on top, product and strict figures side by side.

    .venv/bin/python bench/ablation.py \\
        --base min_rest_agreement=0.95 max_copy_residual=0.0005 \\
        --set max_palette_mismatch=1.0

``--base`` defaults to ``GroupingParams()``; pass what ``bench/grouping.py``'s calibration
picked to compare against its table. No threshold is chosen here.
"""

from __future__ import annotations

import argparse
import dataclasses

import grouping
from grouping_sets import REPORTED, evaluate, load_sets

from photogroup import GroupingParams


def settings(pairs: list[str]) -> dict[str, float]:
    fields = {f.name: f.type for f in dataclasses.fields(GroupingParams)}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields or not value:
            raise SystemExit(f"not a GroupingParams field=value: {pair!r}")
        out[name] = int(value) if fields[name] in (int, "int") else float(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--set", nargs="+", required=True, metavar="FIELD=VALUE")
    args = parser.parse_args()
    base = dataclasses.replace(GroupingParams(), **settings(args.base))
    other = dataclasses.replace(base, **settings(args.set))
    grouping.remember_verifications()
    sets = load_sets()
    for name in ("calibration", *REPORTED):
        cases = sets[name]
        prepared = grouping.prepare(cases)
        for label, params in (("base", base), (" ".join(args.set), other)):
            r = evaluate(cases, *grouping.ours(prepared, params))
            p, s = r["product"], r["strict"]
            family, worst = min(r["families"].items(), key=lambda f: f[1])
            print(f"{name:12s} {label:28s} product P {p['precision']:.3f} R {p['recall']:.3f} "
                  f"F1 {p['f1']:.3f}, variant pairs merged {100 * r['variant_merges']:4.1f} %, "
                  f"strict P {s['precision']:.3f} R {s['recall']:.3f} F1 {s['f1']:.3f}, "
                  f"families < 0.95: {sum(v < 0.95 for v in r['families'].values())} "
                  f"(worst {family} {worst:.2f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
