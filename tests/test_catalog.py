"""Cross-batch matching on a real local S3: re-uploads join their earlier group, tenants
stay apart, adding a batch touches only its own images, rebuilds equal the incremental
path, and a forgotten batch leaves the catalogue."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
import pytest
from PIL import Image, ImageOps

from orchestration.cli import main
from photogroup.samples import load_photo
from tests.helpers import jpeg, materialise, metadata, read_table, upload

pytestmark = pytest.mark.integration
#: catalog_matches and upstream: the index, the grouping stages (not renditions or cut-outs).
CATALOG = ("catalog_matches",)


def photo(name: str) -> Image.Image:
    img = load_photo(name)
    img.thumbnail((400, 400))
    return img


@pytest.fixture(scope="module")
def batches() -> dict[str, dict[str, bytes]]:
    b1 = {"astronaut.jpg": jpeg(photo("astronaut")), "coffee.jpg": jpeg(photo("coffee"))}
    b2 = {"chelsea.jpg": jpeg(photo("chelsea")), "rocket.jpg": jpeg(photo("rocket"))}
    astronaut = photo("astronaut")
    b3 = {
        "astro-small.jpg": jpeg(astronaut.resize((200, 200))),
        "coffee-q25.jpg": jpeg(photo("coffee"), quality=25),
        "cat-flipped.jpg": jpeg(ImageOps.mirror(photo("chelsea"))),
        "rocket-again.jpg": b2["rocket.jpg"],  # the very same bytes
        "camera.jpg": jpeg(photo("camera")),  # new
    }
    return {"b1": b1, "b2": b2, "b3": b3}


EXPECTED = {  # b3 file -> (earlier batch, earlier file, kinds that are right)
    "astro-small.jpg": ("b1", "astronaut.jpg", {"near_duplicate"}),
    "coffee-q25.jpg": ("b1", "coffee.jpg", {"near_duplicate"}),
    "cat-flipped.jpg": ("b2", "chelsea.jpg", {"near_duplicate"}),
    "rocket-again.jpg": ("b2", "rocket.jpg", {"exact_bytes"}),
}


def run_all(instance, s3_client, env, batches, tenant="shop"):
    results = {}
    for name, files in batches.items():
        upload(s3_client, env["UPLOADS_BUCKET"], tenant, name, files)
        results[name] = materialise(instance, f"{tenant}/{name}", assets=CATALOG)
        assert results[name].success
    return results


def test_reuploads_match_their_earlier_image_and_group(s3_env, s3_client, batches):
    pipeline = s3_env["PIPELINE_BUCKET"]
    with dg.instance_for_test() as instance:
        results = run_all(instance, s3_client, s3_env, batches)
        other = {"astronaut.jpg": batches["b1"]["astronaut.jpg"]}
        upload(s3_client, s3_env["UPLOADS_BUCKET"], "other", "o1", other)
        other_run = materialise(instance, "other/o1", assets=CATALOG)
    matches = read_table(s3_client, pipeline, "catalog_matches", "shop/b3")
    best = matches[matches["rank"] == 1].set_index("file")
    for file, (batch, earlier_file, kinds) in EXPECTED.items():
        assert best.match_batch[file] == batch, file
        assert best.match_file[file] == earlier_file, file
        assert best.kind[file] in kinds, (file, best.kind[file])
        earlier = read_table(s3_client, pipeline, "image_clusters", f"shop/{batch}")
        group = earlier.set_index("file").group_id[earlier_file]
        assert best.match_group_id[file] == group
    assert "camera.jpg" not in set(matches[matches.kind != "similar_product"].file)
    # The first batch of a tenant has nothing earlier; the other tenant's identical bytes
    # are in another catalogue and never match.
    assert read_table(s3_client, pipeline, "catalog_matches", "shop/b1").empty
    assert read_table(s3_client, pipeline, "catalog_matches", "other/o1").empty
    assert metadata(other_run, "catalog_index")["catalogue_rows"] == 1
    # Adding b3 embedded only its new bytes, and the catalogue took only its rows.
    meta = metadata(results["b3"], "image_embeddings")
    assert (meta["memo_hits"], meta["memo_misses"]) == (1, 4)
    index_meta = metadata(results["b3"], "catalog_index")
    assert (index_meta["rows_added"], index_meta["catalogue_rows"]) == (5, 9)
    match_meta = metadata(results["b3"], "catalog_matches")
    assert match_meta["earlier_batches"] == 2
    assert match_meta["exact_bytes"] == 1


def search(capsys, tenant: str, path) -> list[dict]:
    """`search --json` in this process (the environment is the test's): an interpreter
    start per query cost seconds; the first query of the test below goes through
    `python -m orchestration` as the contract says."""
    capsys.readouterr()
    assert main(["search", "--tenant", tenant, str(path), "--json", "--k", "3"]) == 0
    return json.loads(capsys.readouterr().out)["matches"]


def search_command(env, tenant: str, path) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "orchestration", "search", "--tenant", tenant, str(path),
         "--json", "--k", "3"],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)["matches"]


def test_search_rebuild_and_forget(s3_env, s3_client, subprocess_env, batches, tmp_path, capsys):
    pipeline = s3_env["PIPELINE_BUCKET"]
    query = tmp_path / "query.jpg"
    query.write_bytes(jpeg(ImageOps.mirror(photo("coffee")).resize((300, 300)), quality=60))
    with dg.instance_for_test() as instance:
        run_all(instance, s3_client, s3_env, batches)
        incremental = read_table(s3_client, pipeline, "catalog_index", "shop/b3")
        found = search_command(subprocess_env, "shop", query)
        assert found[0]["file"] == "coffee.jpg" and found[0]["batch"] == "b1"
        assert found[0]["kind"] == "near_duplicate"
        same = tmp_path / "same.jpg"
        same.write_bytes(batches["b1"]["coffee.jpg"])
        top = search(capsys, "shop", same)[0]
        assert (top["file"], top["kind"], top["distance"]) == ("coffee.jpg", "exact_bytes", 0.0)
        rows_before = _rows(s3_client, pipeline)

        # Rebuild from history: drop the catalogue, materialise the batches again in order.
        listing = s3_client.list_objects_v2(Bucket=pipeline, Prefix="catalog/shop/")
        for obj in listing.get("Contents", []):
            s3_client.delete_object(Bucket=pipeline, Key=obj["Key"])
        for name in batches:
            assert materialise(instance, f"shop/{name}", assets=CATALOG).success
        assert _rows(s3_client, pipeline).equals(rows_before)
        assert search(capsys, "shop", query) == found
        rebuilt = read_table(s3_client, pipeline, "catalog_index", "shop/b3")
        assert rebuilt.drop(columns="embedding").equals(incremental.drop(columns="embedding"))

    forget = subprocess.run(
        [sys.executable, "-m", "orchestration", "forget", "--tenant", "shop", "--batch", "b1"],
        env=subprocess_env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert json.loads(forget.stdout)["catalogue_rows_removed"] == 2
    assert "b1" not in set(_rows(s3_client, pipeline).batch)
    assert all(m["batch"] != "b1" for m in search(capsys, "shop", query))


def test_search_refuses_unknown_tenant_and_bad_image(s3_env, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    good = tmp_path / "coffee.jpg"
    good.write_bytes(jpeg(photo("coffee")))
    for args, message in (
        (["--tenant", "shop", str(bad)], "not_an_image"),
        (["--tenant", "../x", str(good)], "invalid tenant"),
        (["--tenant", "nobody", str(good)], "no catalogue yet"),
        (["--tenant", "shop", str(tmp_path / "missing.jpg")], "no such file"),
    ):
        capsys.readouterr()
        code = main(["search", *args])  # in this process: one interpreter start saved each
        err = capsys.readouterr().err
        assert code == 2 and message in err, err


def _rows(s3_client, bucket):
    import io

    import pandas as pd

    body = s3_client.get_object(Bucket=bucket, Key="catalog/shop/rows.parquet")["Body"].read()
    rows = pd.read_parquet(io.BytesIO(body))
    return rows.sort_values("id").reset_index(drop=True)
