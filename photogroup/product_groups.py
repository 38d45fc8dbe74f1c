"""Product groups: the machine's groups with people's edits applied, named, with a cover."""

from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd

from photogroup.edits import Edit, EditError, Groups, Outcome, apply_log

#: One row per group.
COLUMNS = ["group_id", "product_id", "name", "named", "edited", "size", "product_size",
           "colour", "cover_key", "cover_file", "cover_sha256", "member_keys", "members",
           "member_shas"]  # fmt: skip


def machine_groups(clusters: pd.DataFrame) -> Groups:
    """The groups the image_clusters table holds."""
    return Groups.from_rows(clusters[["sha256", "group_id", "product_id"]].itertuples(False))


def edited_groups(
    clusters: pd.DataFrame, edits: list[Edit | EditError]
) -> tuple[Groups, list[Outcome]]:
    return apply_log(machine_groups(clusters), edits)


def product_group_table(images: pd.DataFrame, groups: Groups, machine: Groups) -> pd.DataFrame:
    """One row per group of ``groups``.

    ``images`` has one row per accepted file: key, file, sha256, sharpness, width, height,
    colour. The cover is the sharpest member, then the largest, then the first by name,
    so it is stable across runs.
    """
    table = images.assign(group_id=images.sha256.map(groups.group_of))
    table = table.assign(
        pixels=table.width * table.height,
        product_id=table.group_id.map(groups.product_of),
    )
    before: dict[str, set[str]] = {}
    for sha, group in machine.group_of.items():
        before.setdefault(group, set()).add(sha)
    rows = []
    for group_id, members in table.groupby("group_id", sort=True):
        order = ["sharpness", "pixels", "file"]
        cover = members.sort_values(order, ascending=[False, False, True]).iloc[0]
        shas = sorted(set(members.sha256))
        name = groups.names.get(group_id)
        rows.append({
            "group_id": group_id,
            "product_id": cover.product_id,
            "name": name or PurePosixPath(cover.file).stem,
            "named": name is not None,
            "edited": before.get(group_id) != set(shas),  # edits changed its members
            "size": len(members),
            "colour": cover.colour,
            "cover_key": cover.key,
            "cover_file": cover.file,
            "cover_sha256": cover.sha256,
            "member_keys": sorted(members.key),
            "members": sorted(members.file),
            "member_shas": shas,
        })  # fmt: skip
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["product_size"] = out.groupby("product_id")["size"].transform("sum")
    return out
