"""People's corrections to a batch's groups, kept as data and re-applied by image identity.

An edit names images by SHA-256, never by group id: group ids come from clustering and
change when it re-runs, image bytes do not. Each edit records the image sets it was made
on, and on every application those sets are *resolved* to today's groups: a set resolves
when all of its images are still in the batch and still share one group. An edit whose
sets resolve is applied (or already holds); any other edit is reported as no longer
applicable, with the reason, and skipped. Nothing is dropped silently.

Kinds (JSON lines in the edit log, plus ``who``, ``when`` and ``why``):

* ``rename``: ``group`` (member SHAs) gets ``name``;
* ``split``: ``images`` move out of their group into a new group and a new product;
* ``merge``: ``groups`` (member SHA lists) become the first group, with its product;
* ``move``: ``image`` joins the group holding ``to`` (member SHAs);
* ``undo``: the edit on line ``undoes`` (from 1) is taken back. The log stays append-only
  (who undid what stays on record); the log is replayed as if that line were absent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

KINDS = ("rename", "split", "merge", "move", "undo")
APPLIED, HOLDS, NOT_APPLICABLE = "applied", "already_holds", "not_applicable"
#: Status of an edit a later ``undo`` took back.
UNDONE = "undone"


class EditError(ValueError):
    """An edit that cannot be made on the current groups; the message says why."""


class NotApplicable(Exception):
    """An edit made on images that are no longer together: an outcome, not a bug."""


@dataclass
class Groups:
    """The batch's groups: image SHA-256 -> group id, plus each group's product and name."""

    group_of: dict[str, str]
    product_of: dict[str, str]  # group id -> product id
    names: dict[str, str] = field(default_factory=dict)  # group id -> name given by an edit

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str]]) -> Groups:
        """From (sha256, group_id, product_id) rows, e.g. the image_clusters table."""
        group_of, product_of = {}, {}
        for sha, group, product in rows:
            group_of[sha] = group
            product_of[group] = product
        return cls(group_of, product_of)

    def copy(self) -> Groups:
        return Groups(dict(self.group_of), dict(self.product_of), dict(self.names))

    def members(self, group: str) -> list[str]:
        return sorted(s for s, g in self.group_of.items() if g == group)

    def group_ids(self) -> list[str]:
        return sorted(set(self.group_of.values()))

    def resolve(self, shas: Sequence[str], what: str) -> str:
        """The one group now holding all of ``shas``."""
        gone = [s for s in shas if s not in self.group_of]
        if gone:
            raise NotApplicable(f"{what}: {len(gone)} image(s) no longer in the batch")
        groups = {self.group_of[s] for s in shas}
        if len(groups) != 1:
            raise NotApplicable(f"{what}: its images are now in {len(groups)} groups")
        return groups.pop()


@dataclass(frozen=True)
class Edit:
    op: str
    who: str
    when: str  # ISO 8601, UTC
    why: str = ""
    name: str | None = None  # rename
    group: tuple[str, ...] = ()  # rename
    images: tuple[str, ...] = ()  # split: the images moved out
    groups: tuple[tuple[str, ...], ...] = ()  # merge: first is the one kept
    image: str | None = None  # move
    to: tuple[str, ...] = ()  # move: members of the target group
    undoes: int | None = None  # undo: line number (from 1) of the edit taken back
    ref: dict = field(default_factory=dict, compare=False)  # group ids and files, for people

    def to_json(self) -> str:
        data = {"op": self.op, "who": self.who, "when": self.when, "why": self.why}
        data.update(_FIELDS[self.op](self))
        if self.ref:
            data["ref"] = self.ref
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Edit:
        """Parse one log line; EditError names what is wrong with it."""
        try:
            data = json.loads(line)
            op = data["op"]
            if op not in KINDS:
                raise EditError(f"unknown edit kind {op!r}")
            edit = cls(
                op=op,
                who=str(data["who"]),
                when=str(data["when"]),
                why=str(data.get("why", "")),
                name=data.get("name"),
                group=tuple(data.get("group", ())),
                images=tuple(data.get("images", ())),
                groups=tuple(tuple(g) for g in data.get("groups", ())),
                image=data.get("image"),
                to=tuple(data.get("to", ())),
                undoes=data.get("undoes"),
                ref=data.get("ref", {}),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EditError(f"unreadable edit: {exc!r}") from exc
        _check_shape(edit)
        return edit


_FIELDS = {
    "rename": lambda e: {"group": list(e.group), "name": e.name},
    "split": lambda e: {"images": list(e.images)},
    "merge": lambda e: {"groups": [list(g) for g in e.groups]},
    "move": lambda e: {"image": e.image, "to": list(e.to)},
    "undo": lambda e: {"undoes": e.undoes},
}


def _check_shape(edit: Edit) -> None:
    problems = {
        "rename": not edit.group or not (edit.name or "").strip(),
        "split": not edit.images,
        "merge": len(edit.groups) < 2 or not all(edit.groups),
        "move": not edit.image or not edit.to,
        "undo": not isinstance(edit.undoes, int) or edit.undoes < 1,
    }
    if problems[edit.op]:
        what = "the line it undoes" if edit.op == "undo" else "its images or name"
        raise EditError(f"{edit.op} edit is missing {what}")


def apply_edit(groups: Groups, edit: Edit) -> str:
    """Apply ``edit`` to ``groups`` in place; APPLIED or HOLDS, else NotApplicable."""
    if edit.op == "rename":
        target = groups.resolve(edit.group, "the renamed group")
        if groups.names.get(target) == edit.name:
            return HOLDS
        groups.names[target] = edit.name
        return APPLIED
    if edit.op == "split":
        source = groups.resolve(edit.images, "the images split out")
        if len(groups.members(source)) == len(set(edit.images)):
            return HOLDS  # they already form a group of their own
        new = new_group_id(edit.images)
        for sha in edit.images:
            groups.group_of[sha] = new
        groups.product_of[new] = "p-" + new[2:]
        return APPLIED
    if edit.op == "merge":
        targets = [groups.resolve(g, f"merged group {i + 1}") for i, g in enumerate(edit.groups)]
        keep, others = targets[0], set(targets[1:]) - {targets[0]}
        if not others:
            return HOLDS
        for sha, group in groups.group_of.items():
            if group in others:
                groups.group_of[sha] = keep
        for other in others:
            if other in groups.names:
                groups.names.setdefault(keep, groups.names.pop(other))
        return APPLIED
    target = groups.resolve(edit.to, "the target group")
    if edit.image not in groups.group_of:
        raise NotApplicable("the moved image is no longer in the batch")
    if groups.group_of[edit.image] == target:
        return HOLDS
    groups.group_of[edit.image] = target
    return APPLIED


def new_group_id(shas: Iterable[str]) -> str:
    """Id of a group a split makes: from its images, so re-applying gives the same id."""
    digest = hashlib.sha256(("split:" + ",".join(sorted(set(shas)))).encode()).hexdigest()
    return "g-" + digest[:16]


@dataclass(frozen=True)
class Outcome:
    index: int  # line number in the log, from 1
    op: str
    status: str  # APPLIED, HOLDS, NOT_APPLICABLE or UNDONE
    reason: str = ""


def apply_log(groups: Groups, edits: Sequence[Edit | EditError]) -> tuple[Groups, list[Outcome]]:
    """Every edit in order on a copy of ``groups``, skipping those a later ``undo`` took
    back; unreadable lines are reported too."""
    result, outcomes = groups.copy(), []
    undone = undone_lines(edits)
    for index, edit in enumerate(edits, start=1):
        if isinstance(edit, EditError):
            outcomes.append(Outcome(index, "?", NOT_APPLICABLE, str(edit)))
            continue
        if index in undone:
            outcomes.append(Outcome(index, edit.op, UNDONE))
            continue
        if edit.op == "undo":
            valid = edit.undoes in undone and undone[edit.undoes] == index
            outcomes.append(Outcome(index, edit.op, APPLIED if valid else NOT_APPLICABLE,
                                    "" if valid else "it names no edit before it"))  # fmt: skip
            continue
        try:
            outcomes.append(Outcome(index, edit.op, apply_edit(result, edit)))
        except NotApplicable as exc:
            outcomes.append(Outcome(index, edit.op, NOT_APPLICABLE, str(exc)))
    return result, outcomes


def undone_lines(edits: Sequence[Edit | EditError]) -> dict[int, int]:
    """Line taken back -> the line of the ``undo`` that took it back. An undo names an
    earlier edit that is neither an undo nor already taken back; others change nothing."""
    undone: dict[int, int] = {}
    for index, edit in enumerate(edits, start=1):
        if isinstance(edit, Edit) and edit.op == "undo" and edit.undoes is not None:
            target = edit.undoes
            if 1 <= target < index and target not in undone:
                named = edits[target - 1]
                if isinstance(named, EditError) or named.op != "undo":
                    undone[target] = index
    return undone


def last_undoable(edits: Sequence[Edit | EditError]) -> int | None:
    """Line of the latest edit an ``undo`` may take back (None when there is none): undoing
    again walks further back."""
    undone = undone_lines(edits)
    for index in range(len(edits), 0, -1):
        edit = edits[index - 1]
        if index not in undone and (isinstance(edit, EditError) or edit.op != "undo"):
            return index
    return None


def undo_edit(edits: Sequence[Edit | EditError], who: str, when: str, why: str = "") -> Edit:
    """An ``undo`` of the latest edit still in force; EditError when there is none."""
    line = last_undoable(edits)
    if line is None:
        raise EditError("undo: there is no edit left to undo")
    return Edit(op="undo", who=who, when=when, why=why, undoes=line)


def parse_log(text: str) -> list[Edit | EditError]:
    """The edits of a JSON-lines log; a bad line becomes an EditError in its place."""
    out: list[Edit | EditError] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(Edit.from_json(line))
        except EditError as exc:
            out.append(exc)
    return out


def check_new_edit(groups: Groups, edit: Edit) -> Groups:
    """Groups after ``edit``, or EditError when it does not apply or changes nothing.

    Stricter than re-application: a person asking for an edit that already holds has
    most likely misread the groups, so it is refused rather than logged as a no-op.
    """
    _check_shape(edit)
    if edit.op == "undo":
        raise EditError("undo is made from the log: see undo_edit")
    if edit.op == "split":
        source = groups.group_of[edit.images[0]]
        outside = [s for s in edit.images if groups.group_of.get(s) != source]
        if outside:
            raise EditError("split: every image must come from the same group")
        if len(set(edit.images)) == len(groups.members(source)):
            raise EditError("split: that would move every image of the group; keep at least one")
    if edit.op == "merge":
        ids = [groups.resolve(g, "merge") for g in edit.groups]
        if len(set(ids)) != len(ids):
            raise EditError("merge: a group is named twice")
    after = groups.copy()
    try:
        status = apply_edit(after, edit)
    except NotApplicable as exc:
        raise EditError(str(exc)) from exc
    if status == HOLDS:
        raise EditError(f"{edit.op}: the groups already look like that; nothing to change")
    return after
