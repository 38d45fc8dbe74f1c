"""One path for every correction of a batch's groups, shared by `groups edit` and the review
app: the request in people's terms (group ids, file names) is checked against the groups the
current log gives, appended to the log by compare-and-swap, and reported to Dagster, so the
command line and the web page cannot disagree on what is valid or recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from orchestration.errors import UserError
from orchestration.partitions import BatchKey
from photogroup.edits import Edit, EditError, Groups, Outcome, check_new_edit, parse_log, undo_edit
from photogroup.product_groups import edited_groups
from resources.edit_log import EditLog, EditLogConflict

OPS = ("rename", "split", "merge", "move", "undo")


class EditConflict(UserError):
    """The log changed after the editor loaded the groups: nothing was written."""


@dataclass(frozen=True)
class EditRequest:
    """One correction as a person asks for it: group ids and upload file names."""

    op: str
    who: str
    why: str = ""
    group: str | None = None  # rename, split
    name: str | None = None  # rename
    files: tuple[str, ...] = ()  # split
    groups: tuple[str, ...] = ()  # merge: the first is kept
    file: str | None = None  # move
    to: str | None = None  # move: target group id


@dataclass
class BatchGroups:
    """A batch's machine groups, its edit log and the two combined."""

    batch: BatchKey
    clusters: pd.DataFrame
    log: EditLog
    text: str
    groups: Groups = field(init=False)
    outcomes: list[Outcome] = field(init=False)

    def __post_init__(self) -> None:
        self.groups, self.outcomes = edited_groups(self.clusters, parse_log(self.text))

    @property
    def version(self) -> str:
        return log_version(self.text)


def log_version(text: str) -> str:
    """The log's version: Dagster's data version of grouping_edits and the token an edit
    form carries to detect that someone else edited in between."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_clusters(batch: BatchKey) -> pd.DataFrame:
    """The batch's image_clusters table; UserError when it was never materialised."""
    import botocore.exceptions

    from orchestration.environment import tables_from_env

    try:
        return tables_from_env().read(dg.AssetKey("image_clusters"), batch.partition_key)
    except botocore.exceptions.ClientError as exc:
        raise UserError(f"no groups for {batch.partition_key}: run it first ({exc})") from exc


def rejections(raw: pd.DataFrame) -> list[tuple[str, str]]:
    """(file, reason) of every upload a raw_images table rejected, by file."""
    rejected = raw[raw.status != "accepted"]
    return sorted(zip(rejected.file, rejected.reason.fillna(""), strict=True))


def read_rejections(batch: BatchKey) -> list[dict[str, str]]:
    """The batch's rejected uploads with their reasons; none when the manifest was never
    materialised (read_clusters says so first)."""
    import botocore.exceptions

    from orchestration.environment import tables_from_env

    try:
        raw = tables_from_env().read(dg.AssetKey("raw_images"), batch.partition_key)
    except botocore.exceptions.ClientError:
        return []
    return [{"file": file, "reason": reason} for file, reason in rejections(raw)]


def load_groups(batch: BatchKey, clusters: pd.DataFrame | None = None) -> BatchGroups:
    """Groups with the current log applied (``clusters`` given: no table read)."""
    from orchestration.environment import edit_log_from_env

    log = edit_log_from_env()
    text, _ = log.read(batch.partition_key)
    return BatchGroups(batch, read_clusters(batch) if clusters is None else clusters, log, text)


def build_edit(clusters: pd.DataFrame, text: str, request: EditRequest, where: str) -> Edit:
    """The log entry ``request`` makes on the groups ``text`` gives; UserError says why not."""
    groups, _ = edited_groups(clusters, edits := parse_log(text))
    sha_of = dict(zip(clusters.file, clusters.sha256, strict=True))
    when = datetime.now(UTC).isoformat(timespec="seconds")
    common = {"op": request.op, "who": request.who, "when": when, "why": request.why}

    def image(file: str) -> str:
        if file not in sha_of:
            raise UserError(f"no accepted image named {file!r} in {where} "
                            "(see `groups --tenant ... --batch ...`)")  # fmt: skip
        return sha_of[file]

    def members(group_id: str | None) -> tuple[str, ...]:
        found = groups.members(group_id or "")
        if not found:
            known = ", ".join(groups.group_ids()[:20])
            raise UserError(f"unknown group {group_id!r} in {where}; "
                            f"its groups are: {known}")  # fmt: skip
        return tuple(found)

    try:
        if request.op == "undo":
            return undo_edit(edits, request.who, when, request.why)
        if request.op == "rename":
            name = (request.name or "").strip()  # blank: refused by check_new_edit
            edit = Edit(**common, group=members(request.group), name=name,
                        ref={"group_id": request.group})  # fmt: skip
        elif request.op == "split":
            members(request.group)
            if not request.files:
                raise UserError("split: select the photos to move out of the group")
            shas = tuple(dict.fromkeys(image(f) for f in request.files))
            outside = [f for f in request.files if groups.group_of[sha_of[f]] != request.group]
            if outside:
                raise UserError(f"split: {', '.join(outside)} not in group {request.group}")
            edit = Edit(**common, images=shas,
                        ref={"group_id": request.group, "files": list(request.files)})  # fmt: skip
        elif request.op == "merge":
            if len(request.groups) < 2:
                raise UserError("merge: select at least two groups")
            edit = Edit(**common, groups=tuple(members(g) for g in request.groups),
                        ref={"group_ids": list(request.groups)})  # fmt: skip
        elif request.op == "move":
            if not request.file:
                raise UserError("move: select the photo to move")
            edit = Edit(**common, image=image(request.file), to=members(request.to),
                        ref={"file": request.file, "group_id": request.to})  # fmt: skip
        else:
            raise UserError(f"unknown edit {request.op!r}; one of {', '.join(OPS)}")
        check_new_edit(groups, edit)
    except EditError as exc:
        raise UserError(str(exc)) from exc
    return edit


def record_edit(
    batch: BatchKey,
    request: EditRequest,
    expected_version: str | None = None,
    clusters: pd.DataFrame | None = None,
    instance: dg.DagsterInstance | None = None,
    shared_s3: bool = False,
) -> dict:
    """Validate and append ``request`` to the batch's log, report it; the recorded entry.
    ``shared_s3``: use the process's shared S3 client (see ``s3_from_env``).

    With ``expected_version`` (the log version the editor saw), an edit made on a log that
    changed since is refused with EditConflict, also when the change lands between our read
    and our write: the compare-and-swap then retries, and the retry sees the new version.
    """
    clusters = read_clusters(batch) if clusters is None else clusters
    from orchestration.environment import edit_log_from_env

    log = edit_log_from_env(shared_s3)

    def make_line(text: str) -> str:
        if expected_version is not None and log_version(text) != expected_version:
            raise EditConflict(
                f"someone else changed the groups of {batch.partition_key} since you loaded "
                "them; your edit was not recorded. The current groups are shown: make it "
                "again if it still applies"
            )
        return build_edit(clusters, text, request, batch.partition_key).to_json()

    try:
        line = log.append(batch.partition_key, make_line)
    except EditLogConflict as exc:
        raise EditConflict(str(exc)) from exc
    edit = json.loads(line)
    report_edit(batch, log, edit, instance)
    return edit


def report_edit(
    batch: BatchKey, log: EditLog, edit: dict, instance: dg.DagsterInstance | None = None
) -> None:
    """Tell Dagster the grouping_edits partition changed, so product_groups shows stale."""
    text, _ = log.read(batch.partition_key)
    # An observation with a data version (not a materialisation) is what Dagster's
    # staleness reads for an external asset: product_groups then shows as stale.
    event = dg.AssetObservation(
        "grouping_edits",
        partition=batch.partition_key,
        metadata={"edits": len(text.splitlines()), "last_edit": edit["op"]},
        tags={"dagster/data_version": log_version(text)},
    )
    if instance is not None:
        instance.report_runless_asset_event(event)
        return
    from orchestration.instance import ensure_dagster_home

    ensure_dagster_home()
    with dg.DagsterInstance.get() as own:
        own.report_runless_asset_event(event)
