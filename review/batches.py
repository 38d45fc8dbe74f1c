"""What the pages show: batches with their state in Dagster, and one batch's groups.

Tables come from the pipeline bucket once per materialisation (cached by the Dagster event
that wrote them), the edit log on every request (it is small and the one thing that changes
under people's hands), so a page of a 2,000-photo batch is a few dictionary look-ups.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import dagster as dg
import pandas as pd

from orchestration.editing import BatchGroups, log_version, rejections
from orchestration.environment import edit_log_from_env, tables_from_env
from orchestration.partitions import BatchKey, upload_batch_partitions
from photogroup.edits import NOT_APPLICABLE, parse_log
from photogroup.evidence import batch_listing, evidence_line
from photogroup.renditions import MEDIA_TYPES

#: The rendition a thumbnail shows (product_images' smallest size), best format first.
THUMB_SIZE, THUMB_FORMATS = 256, ("webp", "jpeg")
#: Uploads a browser shows as they are (by their sniffed type); any other (HEIC, TIFF) is
#: shown as its largest rendition, a JPEG where there is one: upright and sRGB, as the
#: catalogue has it.
BROWSER_IMAGES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "image/bmp")
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
#: Batch tables kept in memory (one 2,000-photo batch is a few MB).
CACHED_BATCHES = 16


class NotFound(LookupError):
    """An unknown batch, file, group or run: the message is shown with a 404."""


def _latest(instance: dg.DagsterInstance, asset: str, key: str, observation: bool = False):
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key])
    fetch = instance.fetch_observations if observation else instance.fetch_materializations
    records = fetch(records_filter, limit=1).records
    return records[0] if records else None


def _meta(record) -> dict:
    if record is None:
        return {}
    event = record.asset_materialization or record.asset_observation
    return {k: v.value for k, v in event.metadata.items()} if event else {}


@dataclass(frozen=True)
class BatchSummary:
    batch: BatchKey
    state: str  # materialised, stale, running, failed, not materialised
    detail: str
    counts: dict[str, int]
    updated: float | None  # when the groups were last materialised (epoch seconds)


def batch_summary(instance: dg.DagsterInstance, batch: BatchKey) -> BatchSummary:
    key = batch.partition_key
    raw, clusters = _latest(instance, "raw_images", key), _latest(instance, "image_clusters", key)
    groups = _latest(instance, "product_groups", key)
    edits = _latest(instance, "grouping_edits", key, observation=True)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key}), limit=1)
    run = runs[0] if runs else None
    if run is not None and run.status in IN_PROGRESS:
        state, detail = "running", f"run {run.run_id[:8]} {run.status.value.lower()}"
    elif run is not None and run.status in (dg.DagsterRunStatus.FAILURE,
                                            dg.DagsterRunStatus.CANCELED):  # fmt: skip
        state, detail = "failed", f"run {run.run_id[:8]} {run.status.value.lower()}"
    elif clusters is None:
        state, detail = "not materialised", "no groups yet"
    elif edits is not None and (groups is None or edits.storage_id > groups.storage_id):
        state, detail = "stale", "edited since product_groups was materialised: accept it"
    else:
        state, detail = "materialised", ""
    raw_meta, cluster_meta = _meta(raw), _meta(clusters)
    edit_count = _meta(edits).get("edits", _meta(groups).get("edits", 0))
    counts = {
        "images": int(raw_meta.get("objects", 0)),
        "groups": int(cluster_meta.get("groups", 0)),
        "products": int(cluster_meta.get("products", 0)),
        "rejected": int(raw_meta.get("rejected", 0)),
        "edits": int(edit_count),
    }
    return BatchSummary(batch, state, detail, counts, clusters.timestamp if clusters else None)


def tenant_batches(instance: dg.DagsterInstance, allows) -> dict[str, list[BatchKey]]:
    """Tenant -> its batches, newest registered first (the order the sensor saw them)."""
    out: dict[str, list[BatchKey]] = {}
    for key in reversed(instance.get_dynamic_partitions(upload_batch_partitions.name)):
        try:
            batch = BatchKey.parse(key)
        except ValueError:
            continue
        if allows(batch.tenant):
            out.setdefault(batch.tenant, []).append(batch)
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class BatchTables:
    """The tables a batch page needs, read once per materialisation."""

    clusters: pd.DataFrame
    colour_of: dict[str, str]  # file -> its machine group's colour
    # file -> (bucket, key, media type): the media type from what the pipeline read, never
    # from S3's ContentType (an upload often has none, or a generic one, on AWS).
    thumb: dict[str, tuple[str, str, str]]  # the 256 px rendition
    original: dict[str, tuple[str, str, str]]  # the upload, or its largest rendition
    rejected: list[tuple[str, str]]  # (file, reason)
    images: int
    #: Views already made, by edit-log version: a page view is then only its HTML.
    views: dict[str, BatchView] = field(default_factory=dict, compare=False, repr=False)


class BatchCache:
    """Batch tables by the storage ids of the materialisations that wrote them."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, BatchTables] = OrderedDict()
        self._lock = threading.Lock()

    def tables(self, instance: dg.DagsterInstance, batch: BatchKey) -> BatchTables:
        key = batch.partition_key
        if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
            raise NotFound(f"no batch {key!r}")
        records = [_latest(instance, a, key) for a in ("image_clusters", "raw_images",
                                                        "product_images")]  # fmt: skip
        if records[0] is None or records[1] is None:
            raise NotFound(f"batch {key!r} has no groups yet: its run has not finished")
        ident = (key, *(r.storage_id if r else None for r in records))
        with self._lock:
            if ident in self._items:
                self._items.move_to_end(ident)
                return self._items[ident]
        tables = _read_tables(key, with_renditions=records[2] is not None)
        with self._lock:
            self._items[ident] = tables
            while len(self._items) > CACHED_BATCHES:
                self._items.popitem(last=False)
        return tables


def _read_tables(key: str, with_renditions: bool) -> BatchTables:
    io = tables_from_env(shared=True)
    clusters = io.read(dg.AssetKey("image_clusters"), key)
    raw = io.read(dg.AssetKey("raw_images"), key)
    pipeline, uploads = os.environ["PIPELINE_BUCKET"], os.environ["UPLOADS_BUCKET"]
    thumbs: dict[str, tuple[str, str, str]] = {}
    largest: dict[str, tuple[str, str, str]] = {}
    if with_renditions:
        renditions = io.read(dg.AssetKey("product_images"), key)
        ok = renditions[renditions.status == "ok"]
        small = ok[ok["size"] == THUMB_SIZE]
        for fmt in reversed(THUMB_FORMATS):  # the preferred format written last wins
            rows = small[small.format == fmt]
            thumbs.update((f, (pipeline, k, MEDIA_TYPES[fmt]))
                          for f, k in zip(rows.file, rows.rendition_key, strict=True))  # fmt: skip
        # The largest, a JPEG where there is one (every browser shows it), written last wins.
        ranked = ok.assign(jpeg=ok.format == "jpeg").sort_values(["size", "jpeg"])
        entries = zip(ranked.file, ranked.rendition_key, ranked.format, strict=True)
        largest.update((f, (pipeline, k, MEDIA_TYPES[fmt])) for f, k, fmt in entries)
    types = dict(zip(raw.file, raw.content_type, strict=True))
    originals = {}
    for file, upload in zip(clusters.file, clusters.key, strict=True):
        if types.get(file) in BROWSER_IMAGES:
            originals[file] = (uploads, upload, types[file])
        elif file in largest:
            originals[file] = largest[file]
    return BatchTables(
        clusters=clusters,
        colour_of=dict(zip(clusters.file, clusters.colour, strict=True)),
        thumb=thumbs,
        original=originals,
        rejected=rejections(raw),
        images=len(raw),
    )


@dataclass(frozen=True)
class GroupCard:
    group_id: str
    name: str | None
    confidence: float | None  # None: people's edits changed its members
    colour: str
    members: list[str]
    why: str
    links: list[dict]


@dataclass(frozen=True)
class ProductCard:
    product_id: str
    groups: list[GroupCard]
    links: list[dict]
    closest_other: dict | None
    undecided: list[dict]  # other products its look cannot tell it from: people decide

    @property
    def confidence(self) -> float | None:
        known = [g.confidence for g in self.groups if g.confidence is not None]
        return min(known) if known else None

    @property
    def photos(self) -> int:
        return sum(len(g.members) for g in self.groups)


@dataclass(frozen=True)
class BatchView:
    products: list[ProductCard]  # lowest confidence first
    version: str  # of the edit log the view was made from
    edits: int
    not_applicable: list[dict]
    group_ids: list[str]


def batch_view(batch: BatchKey, tables: BatchTables) -> BatchView:
    """The groups with the current edit log applied, as cards (the log read now)."""
    text, _ = edit_log_from_env(shared=True).read(batch.partition_key)
    version = log_version(text)
    if version not in tables.views:
        if len(tables.views) >= 4:
            tables.views.clear()
        tables.views[version] = _make_view(batch, tables, text)
    return tables.views[version]


def _make_view(batch: BatchKey, tables: BatchTables, text: str) -> BatchView:
    loaded = BatchGroups(batch, tables.clusters, None, text)  # type: ignore[arg-type]
    listing = batch_listing(tables.clusters, loaded.groups)
    cards: dict[str, GroupCard] = {}
    for g in listing["groups"]:
        colours = Counter(tables.colour_of[f] for f in g["members"])
        cards[g["group_id"]] = GroupCard(
            g["group_id"], g["name"], g["confidence"], colours.most_common(1)[0][0],
            g["members"], evidence_line(g), g["evidence"],
        )  # fmt: skip
    products = [
        ProductCard(
            p["product_id"],
            sorted((cards[g] for g in p["groups"]), key=_order),
            p["evidence"],
            p["closest_other"],
            p["undecided"],
        )
        for p in listing["products"]
    ]
    products.sort(key=lambda p: (_rank(p.confidence), p.product_id))
    edits = parse_log(text)
    stale = [o.__dict__ for o in loaded.outcomes if o.status == NOT_APPLICABLE]
    return BatchView(products, log_version(text), len(edits), stale, sorted(cards))


def _rank(confidence: float | None) -> float:
    """Low confidence first; groups people already edited last."""
    return 2.0 if confidence is None else confidence


def _order(card: GroupCard) -> tuple:
    return (_rank(card.confidence), card.group_id)


def display_name(card: GroupCard) -> str:
    """A group's name, or what the catalogue will call it until someone names it."""
    return card.name or f"unnamed ({PurePosixPath(card.members[0]).stem}…)"
