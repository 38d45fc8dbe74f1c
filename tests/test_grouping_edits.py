"""Grouping edits on a real local S3: the CLI round trip, refusals, and re-application
after clustering re-runs without recomputing features or embeddings."""

import json

import dagster as dg
import pytest

from assets.image_clusters import NAMESPACE as CLUSTERS_NAMESPACE
from orchestration.cli import main
from tests.helpers import materialise, metadata, photo_batch, read_table, upload
from tests.test_memo import EMBEDDED, counted_resources

pytestmark = pytest.mark.integration

#: product_groups and upstream: the grouping stages (not renditions or cut-outs).
GROUPS = ("product_groups",)
PHOTOS = {"coffee": ["resized", "flipped"], "astronaut": ["brightened"], "chelsea": [],
          "rocket": ["recompressed"]}  # fmt: skip
BATCH = ["--tenant", "shop", "--batch", "b1"]


def groups(capsys) -> dict:
    """`groups --json`, as a mapping of group id -> group."""
    capsys.readouterr()
    assert main(["groups", *BATCH, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return {g["group_id"]: g for g in out["groups"]} | {"_stale": out["edits_not_applicable"]}


def group_of(listing: dict, file: str) -> str:
    (found,) = [g for g, v in listing.items() if g != "_stale" and file in v["members"]]
    return found


def edit(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["groups", "edit", *BATCH, "--who", "ana", "--why", "test", *args])
    return code, capsys.readouterr().err


def log_bytes(s3_client, env) -> bytes:
    try:
        body = s3_client.get_object(Bucket=env["PIPELINE_BUCKET"], Key="edits/shop/b1.jsonl")
    except s3_client.exceptions.NoSuchKey:
        return b""
    return body["Body"].read()


@pytest.fixture
def batch(s3_env, s3_client):
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "b1", photo_batch(PHOTOS))
    with dg.instance_for_test() as instance:
        materialise(instance, "shop/b1", counted_resources(), assets=GROUPS)
        yield instance


def test_each_edit_kind_changes_groups_json(batch, capsys, s3_client, s3_env):
    before = groups(capsys)
    coffee = group_of(before, "coffee.jpg")
    assert set(before[coffee]["members"]) == {"coffee.jpg", "coffee-resized.jpg",
                                              "coffee-flipped.jpg"}  # fmt: skip
    assert before[coffee]["name"] is None

    assert edit(capsys, "rename", "--group", coffee, "--name", "Espresso cup")[0] == 0
    assert groups(capsys)[coffee]["name"] == "Espresso cup"

    assert edit(capsys, "split", "--group", coffee, "--files", "coffee-flipped.jpg")[0] == 0
    after = groups(capsys)
    flipped = group_of(after, "coffee-flipped.jpg")
    assert flipped != coffee and after[flipped]["members"] == ["coffee-flipped.jpg"]
    assert after[flipped]["product_id"] != after[coffee]["product_id"]
    assert set(after[coffee]["members"]) == {"coffee.jpg", "coffee-resized.jpg"}

    cat, astronaut = group_of(after, "chelsea.jpg"), group_of(after, "astronaut.jpg")
    assert edit(capsys, "merge", "--groups", astronaut, cat)[0] == 0
    after = groups(capsys)
    assert cat not in after
    assert set(after[astronaut]["members"]) == {"astronaut.jpg", "astronaut-brightened.jpg",
                                                "chelsea.jpg"}  # fmt: skip

    assert edit(capsys, "move", "--file", "rocket.jpg", "--to", coffee)[0] == 0
    after = groups(capsys)
    assert "rocket.jpg" in after[coffee]["members"]
    assert "rocket.jpg" not in after[group_of(after, "rocket-recompressed.jpg")]["members"]
    assert after["_stale"] == []

    lines = [json.loads(x) for x in log_bytes(s3_client, s3_env).decode().splitlines()]
    assert [x["op"] for x in lines] == ["rename", "split", "merge", "move"]
    assert all(x["who"] == "ana" and x["why"] == "test" and x["when"] for x in lines)
    # Dagster knows the edit log changed: product_groups shows as stale.
    (record,) = batch.fetch_observations(dg.AssetKey("grouping_edits"), limit=1).records
    assert record.partition_key == "shop/b1"
    assert record.asset_observation.tags["dagster/data_version"]


ALL_COFFEE = ["coffee.jpg", "coffee-resized.jpg", "coffee-flipped.jpg"]
#: Edits a person might type wrong, and what the refusal says.
INVALID = [
    (["rename", "--group", "g-nosuchgroup", "--name", "x"], "unknown group 'g-nosuchgroup'"),
    (["move", "--file", "nope.jpg", "--to", "{coffee}"], "no accepted image named 'nope.jpg'"),
    (["rename", "--group", "{coffee}", "--name", "  "], "missing its images or name"),
    (["split", "--group", "{coffee}", "--files", *ALL_COFFEE], "would move every image"),
    (["split", "--group", "{coffee}", "--files", "chelsea.jpg"], "not in group"),
    (["merge", "--groups", "{coffee}", "{coffee}"], "named twice"),
    (["move", "--file", "coffee.jpg", "--to", "{coffee}"], "already look like that"),
    (["rename", "--group", "{coffee}", "--name", "Cup"], "already look like that"),
]


def test_invalid_edits_are_refused_and_leave_the_log_unchanged(batch, capsys, s3_client, s3_env):
    coffee = group_of(groups(capsys), "coffee.jpg")
    assert edit(capsys, "rename", "--group", coffee, "--name", "Cup")[0] == 0
    before = log_bytes(s3_client, s3_env)
    for args, message in INVALID:
        code, err = edit(capsys, *[a.replace("{coffee}", coffee) for a in args])
        assert (code, message in err) == (2, True), (args, err)
        assert log_bytes(s3_client, s3_env) == before, args


def test_edits_survive_reclustering_without_recomputing_features_or_embeddings(
    batch, capsys, s3_client, s3_env
):
    listing = groups(capsys)
    coffee = group_of(listing, "coffee.jpg")
    rocket = group_of(listing, "rocket.jpg")
    edit(capsys, "rename", "--group", coffee, "--name", "Espresso cup")
    edit(capsys, "split", "--group", coffee, "--files", "coffee-flipped.jpg")
    edit(capsys, "rename", "--group", rocket, "--name", "Rocket")
    pipeline = s3_env["PIPELINE_BUCKET"]

    # Force clustering to run again: drop its memo entries.
    listed = s3_client.list_objects_v2(Bucket=pipeline, Prefix=f"memo/{CLUSTERS_NAMESPACE}/")
    for obj in listed.get("Contents", []):
        s3_client.delete_object(Bucket=pipeline, Key=obj["Key"])
    EMBEDDED.clear()
    result = materialise(batch, "shop/b1", counted_resources(), assets=GROUPS)
    assert metadata(result, "image_clusters")["memo_hit"] is False
    assert metadata(result, "image_features")["memo_misses"] == 0
    assert metadata(result, "image_embeddings")["embedder_calls"] == 0
    assert sum(EMBEDDED.values()) == 0
    meta = metadata(result, "product_groups")
    assert (meta["edits"], meta["edits_applied"], meta["edits_not_applicable"]) == (3, 3, 0)
    table = read_table(s3_client, pipeline, "product_groups", "shop/b1").set_index("name")
    assert sorted(table.loc["Espresso cup"].members) == ["coffee-resized.jpg", "coffee.jpg"]
    assert list(table.loc["Rocket"].members) == ["rocket-recompressed.jpg", "rocket.jpg"]
    assert bool(table.loc["coffee-flipped"].edited)

    # Clustering now puts the rocket photos apart: the rename no longer applies, and says so.
    (entry,) = [
        o["Key"]
        for o in s3_client.list_objects_v2(Bucket=pipeline, Prefix=f"memo/{CLUSTERS_NAMESPACE}/")[
            "Contents"
        ]
        if "/packs/" not in o["Key"]
    ]
    stored = json.loads(s3_client.get_object(Bucket=pipeline, Key=entry)["Body"].read())
    clusters = read_table(s3_client, pipeline, "image_clusters", "shop/b1")
    moved = clusters.sha256[clusters.file == "rocket-recompressed.jpg"].iloc[0]
    for a in stored["assignments"]:
        if a["image_id"] == moved:
            a["group_id"], a["product_id"] = "g-apart", "p-apart"
    s3_client.put_object(Bucket=pipeline, Key=entry, Body=json.dumps(stored).encode())
    result = dg.materialize(
        [*_pipeline_assets()],
        partition_key="shop/b1",
        instance=batch,
        resources=counted_resources(),
        selection=["image_clusters", "product_groups"],
    )
    meta = metadata(result, "product_groups")
    assert (meta["edits_applied"], meta["edits_not_applicable"]) == (2, 1)
    (stale,) = meta["not_applicable"]
    assert stale["op"] == "rename" and "now in 2 groups" in stale["reason"]
    assert stale["who"] == "ana"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["every_edit_applies"] is False
    assert groups(capsys)["_stale"][0]["reason"] == stale["reason"]


def _pipeline_assets():
    from assets import ALL_ASSETS

    return ALL_ASSETS


def test_concurrent_appends_all_land(s3_env):
    """Compare-and-swap: eight writers at once, no edit lost, every line whole."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestration.environment import edit_log_from_env

    log = edit_log_from_env()
    seen: list[int] = []

    def append(n: int) -> str:
        def line(text: str) -> str:
            seen.append(len(text.splitlines()))  # validated against the log as it is
            return json.dumps({"op": "rename", "n": n})

        return log.append("shop/b9", line, attempts=30)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(append, range(8)))
    text, etag = log.read("shop/b9")
    assert etag and sorted(json.loads(x)["n"] for x in text.splitlines()) == list(range(8))
    assert len(seen) >= 8  # conflicts re-validate on the newer log rather than overwrite it


def test_an_append_that_always_loses_the_race_gives_up_after_its_attempts(s3_env):
    """Each try is overtaken by another writer: EditLogConflict after ``attempts`` tries."""
    from orchestration.environment import edit_log_from_env
    from resources.edit_log import EditLogConflict

    log = edit_log_from_env()
    tries: list[int] = []

    def overtaken(text: str) -> str:
        tries.append(len(text.splitlines()))
        log.append("shop/b10", lambda _: json.dumps({"op": "rename", "n": -len(tries)}))
        return json.dumps({"op": "rename", "n": 0})

    with pytest.raises(EditLogConflict, match="changed 3 times"):
        log.append("shop/b10", overtaken, attempts=3)
    assert tries == [0, 1, 2]  # read again each time, and never written
    text, _ = log.read("shop/b10")
    assert [json.loads(x)["n"] for x in text.splitlines()] == [-1, -2, -3]
