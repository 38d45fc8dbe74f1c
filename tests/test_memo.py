"""Memoisation proven with counters: S3 GETs of image objects and embedder calls."""

import json
import subprocess
import sys
from collections import Counter

import dagster as dg
import pytest

from assets.versions import FEATURES_VERSION, WORK_VERSION
from orchestration.definitions import env_s3, pipeline_resources
from photogroup.embed import LocalEmbedder
from resources.embedder import EmbedderResource
from resources.s3 import S3Resource
from tests.helpers import EVERY_ASSET, GROUPING, materialise, metadata, photo_batch, upload

pytestmark = pytest.mark.integration

GETS: list[tuple[str, str]] = []
EMBEDDED: Counter = Counter()  # model id -> images embedded


class CountingS3Resource(S3Resource):
    """The real client, with a botocore hook that records every GetObject."""

    def create_client(self):
        client = super().create_client()
        client.meta.events.register(
            "provide-client-params.s3.GetObject",
            lambda params, **_: GETS.append((params["Bucket"], params["Key"])),
        )
        return client


class CountingEmbedder(LocalEmbedder):
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def embed(self, images):
        EMBEDDED[self.model_id] += len(images)
        return super().embed(images)


class CountingEmbedderResource(EmbedderResource):
    model_id: str = LocalEmbedder.model_id

    def get_embedder(self):
        return CountingEmbedder(self.model_id)


def counted_resources(model_id: str = LocalEmbedder.model_id) -> dict:
    s3 = env_s3(CountingS3Resource)
    embedder = CountingEmbedderResource(model_id=model_id, s3=s3)
    return {**pipeline_resources(s3), "embedder": embedder}


def image_gets(env: dict) -> int:
    """GETs of uploaded images or of their working copies (not memo entries or tables)."""
    return sum(
        1 for bucket, key in GETS if bucket == env["UPLOADS_BUCKET"] or key.startswith("memo/work/")
    )


PHOTOS = {"astronaut": ["flipped"], "coffee": ["resized"], "chelsea": ["brightened"],
          "rocket": ["recompressed"], "coins": ["padded"]}  # fmt: skip


@pytest.fixture(autouse=True)
def reset_counters():
    GETS.clear()
    EMBEDDED.clear()


@pytest.fixture
def files(s3_env, s3_client):
    files = photo_batch(PHOTOS)
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "b1", files)
    return files


def test_unchanged_batch_makes_no_image_gets_and_no_embedder_calls(s3_env, files):
    # Every asset: the batched lookups of every image stage are what is checked.
    with dg.instance_for_test() as instance:
        materialise(instance, "shop/b1", counted_resources(), assets=EVERY_ASSET)
        assert image_gets(s3_env) >= len(files)  # the cold run did read the images
        assert EMBEDDED[LocalEmbedder.model_id] == len(files)
        GETS.clear()
        EMBEDDED.clear()
        warm = materialise(instance, "shop/b1", counted_resources(), assets=EVERY_ASSET)
    assert image_gets(s3_env) == 0
    assert sum(EMBEDDED.values()) == 0
    # Batched: one pack per image stage (fingerprints, features, embeddings, renditions,
    # cut-outs), the cluster entry, its contact sheet and the covers sheet; not one GET
    # per image.
    memo_gets = sorted(k.split("/")[1] for _, k in GETS if k.startswith("memo/"))
    assert memo_gets == ["clusters", "contact_sheets", "covers", "cutouts", "embeddings",
                         "features", "fingerprint", "renditions"], memo_gets  # fmt: skip
    assert metadata(warm, "image_embeddings")["embedder_calls"] == 0
    assert metadata(warm, "image_clusters")["memo_hit"] is True


def test_batch_sharing_80_percent_embeds_only_the_new_20(s3_env, s3_client, files):
    shared = dict(list(files.items())[:8])
    new = photo_batch({"immunohistochemistry": ["flipped"]})
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "b2",
           {f"reupload-{name}": body for name, body in shared.items()} | new)  # fmt: skip
    with dg.instance_for_test() as instance:
        materialise(instance, "shop/b1", counted_resources(), assets=GROUPING)
        GETS.clear()
        EMBEDDED.clear()
        second = materialise(instance, "shop/b2", counted_resources(), assets=GROUPING)
    emb = metadata(second, "image_embeddings")
    assert emb["memo_hit_rate"] >= 0.8
    assert (emb["memo_hits"], emb["memo_misses"]) == (8, 2)
    assert EMBEDDED[LocalEmbedder.model_id] == 2
    # Only the two new uploads are fetched; known ones are recognised by ETag and size.
    assert {k for b, k in GETS if b == s3_env["UPLOADS_BUCKET"]} == {
        f"uploads/shop/b2/{name}" for name in new
    }


def test_bumping_the_model_id_misses_every_embedding(s3_env, files):
    with dg.instance_for_test() as instance:
        materialise(instance, "shop/b1", counted_resources(), assets=GROUPING)
        EMBEDDED.clear()
        bumped = materialise(
            instance, "shop/b1", counted_resources(model_id="local-v2-test"), assets=GROUPING
        )
    emb = metadata(bumped, "image_embeddings")
    assert (emb["memo_hits"], emb["memo_misses"]) == (0, len(files))
    assert Counter({"local-v2-test": len(files)}) == EMBEDDED
    assert metadata(bumped, "image_features")["memo_misses"] == 0  # other stages unaffected


def test_corrupted_entries_are_logged_recomputed_and_rewritten(s3_env, s3_client, files):
    pipeline = s3_env["PIPELINE_BUCKET"]
    with dg.instance_for_test() as instance:
        first = materialise(instance, "shop/b1", counted_resources(), assets=GROUPING)
        listing = s3_client.list_objects_v2(
            Bucket=pipeline, Prefix=f"memo/features/{FEATURES_VERSION}/"
        )
        features = [o["Key"] for o in listing["Contents"] if "/packs/" not in o["Key"]]
        good = s3_client.get_object(Bucket=pipeline, Key=features[0])["Body"].read()
        sha = features[0].rsplit("/", 1)[1]
        s3_client.put_object(Bucket=pipeline, Key=features[0], Body=b"{not json")
        # The batch's pack would answer first: corrupt it too, so the entry is read.
        pack = f"memo/features/{FEATURES_VERSION}/work{WORK_VERSION}/packs/shop/b1.json"
        s3_client.put_object(Bucket=pipeline, Key=pack, Body=b"\x00\x01")
        work = f"memo/work/{WORK_VERSION}/{sha[:2]}/{sha}"
        s3_client.put_object(Bucket=pipeline, Key=work, Body=b"\x89PNG garbage")
        again = materialise(instance, "shop/b1", counted_resources(), assets=GROUPING)
    assert again.success
    meta = metadata(again, "image_features")
    assert (meta["memo_hits"], meta["memo_misses"]) == (len(files) - 1, 1)
    assert meta["memo_corrupt_entries"] == 3  # the pack, the entry and its working copy
    assert meta["originals_fetched"] == 1
    rewritten = s3_client.get_object(Bucket=pipeline, Key=features[0])["Body"].read()
    assert json.loads(rewritten) == json.loads(good)
    repacked = json.loads(s3_client.get_object(Bucket=pipeline, Key=pack)["Body"].read())
    assert repacked[sha] == json.loads(good)
    clusters = metadata(first, "image_clusters")["groups"]
    assert metadata(again, "image_clusters")["groups"] == clusters


def test_two_runs_writing_the_same_entries_at_once_both_succeed(
    s3_env, s3_client, files, subprocess_env, tmp_path
):
    """Entries are immutable and PUTs atomic: concurrent writers cannot corrupt them.
    Two processes, as two runs of one batch would be on a real deployment."""
    procs = []
    for name in ("one", "two"):
        home = tmp_path / name
        home.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "orchestration", "run", "--tenant", "shop", "--batch", "b1"],
                env={**subprocess_env, "DAGSTER_HOME": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    pipeline = s3_env["PIPELINE_BUCKET"]
    listing = s3_client.list_objects_v2(Bucket=pipeline, Prefix="memo/embeddings/")["Contents"]
    entries = [o["Key"] for o in listing if "/packs/" not in o["Key"]]
    assert len(entries) == len(files)
    for key in entries:
        json.loads(s3_client.get_object(Bucket=pipeline, Key=key)["Body"].read())
    with dg.instance_for_test() as instance:
        warm = materialise(instance, "shop/b1", counted_resources(), assets=GROUPING)
    assert metadata(warm, "image_embeddings")["memo_hit_rate"] == 1.0
