import hashlib
import json

import dagster as dg
import numpy as np
import pandas as pd

from assets.contact_sheets import contact_sheet_metadata
from assets.preset import BATCH
from assets.tables import content_version, coverage_check, ok_rows, preview
from assets.versions import CLUSTERS_VERSION, FEATURES_VERSION
from photogroup import GroupingParams
from photogroup.cluster import group_with_evidence
from photogroup.evidence import EMPTY, evidence_by_image, evidence_counts, plain
from photogroup.verify import Keypoints
from resources.memo import MemoStore

COLUMNS = ["key", "file", "sha256", "group_id", "product_id", "confidence",
           "is_group_centre", "colour", "group_size", "product_size", "evidence"]  # fmt: skip
NAMESPACE = f"clusters/{CLUSTERS_VERSION}"


def cluster_memo_key(shas: list[str], model_ids: list[str], params: GroupingParams) -> str:
    """Everything a grouping depends on: member bytes, feature/model versions, thresholds."""
    basis = {"shas": sorted(set(shas)), "features": FEATURES_VERSION,
             "models": sorted(set(model_ids)), "params": params.as_dict()}  # fmt: skip
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def assign(features: pd.DataFrame, embeddings: pd.DataFrame, params: GroupingParams) -> dict:
    """Group the unique bytes of the batch: the memo entry, one assignment dict per SHA-256
    plus the evidence (``group_links``, ``product_links``, ``product_checks``)."""
    unique = features.drop_duplicates("sha256").set_index("sha256")
    vectors = embeddings.drop_duplicates("sha256").set_index("sha256").embedding
    shas = list(unique.index)
    dim = len(vectors.iloc[0]) if len(vectors) else 1
    # An image the embedder failed on still gets a group: a zero vector links it by hash only.
    missing = np.zeros(dim, dtype=np.float32)
    matrix = np.stack([vectors.get(s, missing) for s in shas]) if shas else np.zeros((0, dim))
    result = group_with_evidence(
        shas,
        [list(unique.phash_d4[s]) for s in shas],
        matrix,
        params,
        keypoints=[Keypoints.from_base64(unique.keypoints[s]) for s in shas],
        colours=[
            unique.dominant_colors[s][0] if len(unique.dominant_colors[s]) else "" for s in shas
        ],
    )
    evidence = {"group_links": result.group_links, "product_links": result.product_links,
                "product_checks": result.product_checks}  # fmt: skip
    return {"assignments": [a.__dict__ for a in result.assignments], **plain(evidence)}


def cluster_table(features: pd.DataFrame, entry: dict) -> pd.DataFrame:
    """Every file gets the group of its bytes; sizes count files. ``evidence`` is a JSON
    string of the links in which the row's image is ``a``, the same on every file with the
    same bytes (photogroup.evidence)."""
    assignments = entry["assignments"]
    if not assignments:
        return pd.DataFrame(columns=COLUMNS)
    by_sha = pd.DataFrame(assignments).rename(columns={"image_id": "sha256"})
    table = features[["key", "file", "sha256"]].merge(by_sha, on="sha256", how="left")
    # A file whose bytes repeat another's is a copy, not a second centre.
    table["is_group_centre"] &= ~table.duplicated("sha256")
    table["group_size"] = table.groupby("group_id").key.transform("count")
    table["product_size"] = table.groupby("product_id").key.transform("count")
    # A lookup with a default, not map+fillna: when no image has evidence, map gives a
    # float NaN column that pandas 4 will not fill with a string.
    evidence = evidence_by_image(entry)
    table["evidence"] = [evidence.get(sha, EMPTY) for sha in table.sha256]
    return table[COLUMNS].sort_values(["product_id", "group_id", "file"], ignore_index=True)


@dg.asset(
    **BATCH,
    code_version=CLUSTERS_VERSION,
    check_specs=[dg.AssetCheckSpec("every_image_in_exactly_one_group", asset="image_clusters")],
)
def image_clusters(
    context: dg.AssetExecutionContext,
    image_features: pd.DataFrame,
    image_embeddings: pd.DataFrame,
    memo: MemoStore,
):
    """One row per accepted image: its strict group (copies and edits of one photo), its
    product (groups showing the same product) and the group's confidence."""
    params = GroupingParams()
    image_embeddings = ok_rows(image_embeddings)  # a failed image groups by its hash alone
    key = cluster_memo_key(list(image_features.sha256), list(image_embeddings.model_id), params)
    entry, hit = _memoised_entry(key, image_features, image_embeddings, params, memo, context.log)
    table = cluster_table(image_features, entry)
    context.log.info(f"{len(table)} images -> {table.group_id.nunique()} groups, "
                     f"{table.product_id.nunique()} products")  # fmt: skip
    yield dg.Output(
        table,
        data_version=content_version(table, ["sha256", "group_id", "product_id"]),
        metadata={
            **_metadata(table, entry, hit, params),
            **contact_sheet_metadata(table, key, memo),
        },
    )
    grouped = table[table.group_id.notna()]
    yield coverage_check(
        "every_image_in_exactly_one_group", grouped, image_features.assign(status="accepted")
    )


def _memoised_entry(key: str, features, embeddings, params, memo: MemoStore, log):
    """The grouping entry of these members, computed and memoised on a miss; and whether it
    was a hit. One key, not a batch of images: the stage engine's loop is not needed here."""
    found = memo.get_json_many(
        NAMESPACE, [key], lambda k, why: log.warning(f"cluster memo {k[:12]}: {why}")
    )
    entry = found.get(key)
    hit = entry is not None and "product_checks" in entry  # (older entries lack evidence)
    if not hit:
        entry = assign(features, embeddings, params)
        memo.put_json_many(NAMESPACE, {key: entry})
    return entry, hit


def _metadata(table: pd.DataFrame, entry: dict, hit: bool, params: GroupingParams) -> dict:
    groups = table.drop_duplicates("group_id")
    multi = table[table.group_size > 1]
    return {
        "images": len(table),
        "groups": len(groups),
        "products": int(table.product_id.nunique()),
        "singletons": int((groups.group_size == 1).sum()),
        "largest_group": int(table.group_size.max()) if len(table) else 0,
        "memo_hit": hit,
        **evidence_counts(entry, dict(zip(table.sha256, table.product_id, strict=True))),
        "grouping_params": dg.MetadataValue.json(params.as_dict()),
        "groups_preview": preview(multi, ["group_id", "product_id", "file", "confidence"], 30),
    }
