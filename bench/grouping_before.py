"""The grouping of ``BASELINE_COMMIT`` (before surface verification) on today's sets.

``figures()`` extracts that commit's ``photogroup`` into a temporary folder and runs this
file there as a worker: features, embeddings and ``group_images`` with that code's own
defaults, scored by ``grouping_sets.evaluate`` exactly as ``grouping.py`` scores ours.

    .venv/bin/python bench/grouping_before.py   # prints the figures as JSON
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The last commit before the grouping of issue 17 (same as features_speed's baseline).
BASELINE_COMMIT = "2d25512"


@contextlib.contextmanager
def baseline_tree() -> Iterator[str]:
    """A temporary folder holding ``BASELINE_COMMIT``'s ``photogroup`` package."""
    with tempfile.TemporaryDirectory() as old:
        command = ["git", "archive", BASELINE_COMMIT, "photogroup"]
        archive = subprocess.run(command, cwd=HERE.parent, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        yield old


def figures() -> dict[str, dict]:
    """Set name -> evaluate() of the baseline's grouping, run in a subprocess."""
    with baseline_tree() as old:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([old, str(HERE)])}
        out = subprocess.run([sys.executable, str(Path(__file__)), "--worker"], cwd=old,
                             env=env, check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker() -> None:
    import hashlib

    from grouping_sets import REPORTED, evaluate, load_sets

    import photogroup
    from photogroup import GroupingParams, LocalEmbedder, compute_features, decode_image
    from photogroup.verify import Keypoints

    if not photogroup.__file__.startswith(os.environ["PYTHONPATH"].split(os.pathsep)[0]):
        raise SystemExit(f"not the baseline's photogroup: {photogroup.__file__}")
    sets = load_sets()
    results = {}
    for name in REPORTED:
        cases = sets[name]
        works = [decode_image(c.path.read_bytes()).image for c in cases]
        features = [compute_features(w) for w in works]
        ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(cases))]
        assignments = photogroup.group_images(
            ids, [f.phash_d4 for f in features], LocalEmbedder().embed(works),
            GroupingParams(), keypoints=[Keypoints.from_base64(f.keypoints) for f in features],
        )  # fmt: skip
        by_id = {a.image_id: a for a in assignments}
        groups = [by_id[i].group_id for i in ids]
        products = [by_id[i].product_id for i in ids]
        results[name] = evaluate(cases, groups, products)
    print(json.dumps(results))


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _worker()
    else:
        print(json.dumps(figures(), indent=1))
