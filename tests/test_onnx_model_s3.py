"""An ONNX encoder stored on S3: resolved into a local cache once per ETag, then embedded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from photogroup.onnx_embedder import OnnxEmbedder
from resources.model_files import cache_name, resolve_model_file
from resources.s3 import client_config
from tests.core.test_onnx_embedder import FEATURES, build_model

pytestmark = pytest.mark.integration

KEY = "models/encoder/tiny.onnx"


@pytest.fixture
def requests(s3_client) -> Counter:
    """HTTP requests ``s3_client`` sends, by operation, counted by a botocore hook."""
    counts: Counter = Counter()
    for operation in ("GetObject", "HeadObject"):
        # A before-send handler must return None, or botocore takes it as the response.
        s3_client.meta.events.register(
            f"before-send.s3.{operation}", lambda op=operation, **_: counts.update([op])
        )
    return counts


def images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [
        Image.fromarray(rng.integers(0, 256, (48, 40 + 8 * i, 3), dtype=np.uint8), "RGB")
        for i in range(3)
    ]


def test_resolve_downloads_once_per_etag_and_embeds(s3_client, s3_env, requests, tmp_path):
    bucket = s3_env["PIPELINE_BUCKET"]
    uri = f"s3://{bucket}/{KEY}"
    cache = tmp_path / "cache"
    first_model = build_model(tmp_path / "v1.onnx", seed=0)
    s3_client.upload_file(str(first_model), bucket, KEY)
    requests.clear()

    path = resolve_model_file(uri, s3_client, cache)
    assert requests["GetObject"] == 1
    assert path.parent == cache and path.suffix == ".onnx"
    assert path.read_bytes() == first_model.read_bytes()
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp file left behind

    embedder = OnnxEmbedder(path)
    local = OnnxEmbedder(first_model)
    assert embedder.model_id == local.model_id  # the id follows the bytes, not the location
    rows = embedder.embed(images())
    assert rows.shape == (3, FEATURES)
    np.testing.assert_allclose(rows, local.embed(images()), atol=1e-6)

    # Unchanged object: one HEAD, no GET, same file untouched.
    mtime = path.stat().st_mtime_ns
    assert resolve_model_file(uri, s3_client, cache) == path
    assert requests["GetObject"] == 1
    assert requests["HeadObject"] == 2
    assert path.stat().st_mtime_ns == mtime

    # Replaced object: new ETag, fetched again into a new entry.
    second_model = build_model(tmp_path / "v2.onnx", seed=1)
    s3_client.upload_file(str(second_model), bucket, KEY)
    new_path = resolve_model_file(uri, s3_client, cache)
    assert requests["GetObject"] == 2
    assert new_path != path
    assert new_path.read_bytes() == second_model.read_bytes()
    assert OnnxEmbedder(new_path).model_id != embedder.model_id

    assert resolve_model_file(uri, s3_client, cache) == new_path
    assert requests["GetObject"] == 2


def test_a_partial_cache_entry_is_fetched_again(s3_client, s3_env, requests, tmp_path):
    bucket = s3_env["PIPELINE_BUCKET"]
    model = build_model(tmp_path / "m.onnx")
    s3_client.upload_file(str(model), bucket, KEY)
    cache = tmp_path / "cache"
    path = resolve_model_file(f"s3://{bucket}/{KEY}", s3_client, cache)
    path.write_bytes(path.read_bytes()[:100])  # e.g. someone copied a cache by hand, badly
    requests.clear()

    assert resolve_model_file(f"s3://{bucket}/{KEY}", s3_client, cache) == path
    assert requests["GetObject"] == 1
    assert path.read_bytes() == model.read_bytes()


def test_object_replaced_between_head_and_get(seaweed, s3_client, s3_env, requests, tmp_path):
    """The GET is pinned to the HEAD's ETag, so the new bytes never land under the old name."""
    bucket = s3_env["PIPELINE_BUCKET"]
    old, new = (
        build_model(tmp_path / "old.onnx", seed=0),
        build_model(tmp_path / "new.onnx", seed=1),
    )
    s3_client.upload_file(str(old), bucket, KEY)
    uploader = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
    )
    replaced: list[bool] = []

    def replace_once(**_) -> None:
        if not replaced:
            uploader.upload_file(str(new), bucket, KEY)
            replaced.append(True)

    s3_client.meta.events.register("after-call.s3.HeadObject", replace_once)
    path = resolve_model_file(f"s3://{bucket}/{KEY}", s3_client, tmp_path / "cache")

    assert path.read_bytes() == new.read_bytes()
    assert requests["HeadObject"] == 2  # the refused GET sent us back to HEAD
    etag = s3_client.head_object(Bucket=bucket, Key=KEY)["ETag"].strip('"')
    assert path.name == cache_name(bucket, KEY, etag)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_missing_key_and_bucket(s3_client, s3_env, tmp_path):
    bucket = s3_env["PIPELINE_BUCKET"]
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=rf"NoSuchKey\): s3://{bucket}/models/none\.onnx"):
        resolve_model_file(f"s3://{bucket}/models/none.onnx", s3_client, cache)
    with pytest.raises(FileNotFoundError, match=r"NoSuchBucket\): s3://no-such-bucket-x1/m\.onnx"):
        resolve_model_file("s3://no-such-bucket-x1/m.onnx", s3_client, cache)
    assert not cache.exists()


def test_access_denied(seaweed, s3_client, s3_env, tmp_path):
    bucket = s3_env["PIPELINE_BUCKET"]
    s3_client.put_object(Bucket=bucket, Key=KEY, Body=b"model")
    stranger = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
        config=client_config(max_attempts=1),
    )
    with pytest.raises(PermissionError, match=r"access denied \(403\) to s3://"):
        resolve_model_file(f"s3://{bucket}/{KEY}", stranger, tmp_path / "cache")


def test_local_paths_and_bad_uris(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    assert resolve_model_file(str(model), None, tmp_path / "cache") == model
    assert not (tmp_path / "cache").exists()  # local paths are used in place
    with pytest.raises(FileNotFoundError, match=r"model file not found: .*absent\.onnx"):
        resolve_model_file(str(tmp_path / "absent.onnx"), None, tmp_path)
    with pytest.raises(FileNotFoundError, match="not a file"):
        resolve_model_file(str(tmp_path), None, tmp_path)
    for bad in ("s3://bucket-only", "s3://bucket/", "s3:///key.onnx", "s3://b/dir/"):
        with pytest.raises(ValueError, match="invalid S3 model URI"):
            resolve_model_file(bad, None, tmp_path)
    with pytest.raises(ValueError, match="unsupported model URI"):
        resolve_model_file("https://example.invalid/m.onnx", None, tmp_path)


def test_cache_names_depend_on_bucket_key_and_etag():
    base = cache_name("b", "k.onnx", "e1")
    assert base.endswith(".onnx") and len(base) == 64 + 5
    assert len({base, cache_name("b", "k.onnx", "e2"), cache_name("c", "k.onnx", "e1")}) == 3
    assert Path(cache_name("b", "k", "e")).suffix == ""
