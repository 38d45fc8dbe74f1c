"""The cut-out resource picks u2netp unless configured otherwise; GrabCut stays one setting
away; a bad model file fails the run with the pinned SHA-256 in the message."""

import pytest

from orchestration.definitions import defs
from photogroup.cutout_providers import LocalCutouts
from photogroup.u2netp import DEFAULT_MODEL_PATH, MODEL_SHA256, ModelFileError, U2netpCutouts
from resources.cutouts import CutoutResource
from resources.s3 import S3Resource


def resource(**settings) -> CutoutResource:
    return CutoutResource(s3=S3Resource(), **settings)


def test_u2netp_is_the_default_provider(monkeypatch):
    monkeypatch.delenv("CUTOUT_PROVIDER", raising=False)
    assert resource().settings().provider == "u2netp"
    provider = resource().get_provider("shop")
    assert isinstance(provider, U2netpCutouts) and provider.workers >= 1
    assert MODEL_SHA256 in provider.model_id and resource().in_process


def test_the_definitions_use_the_default_unless_cutout_provider_says_otherwise(monkeypatch):
    cutouts = defs.resources["cutouts"]
    monkeypatch.delenv("CUTOUT_PROVIDER", raising=False)
    assert cutouts.settings().provider == "u2netp"
    monkeypatch.setenv("CUTOUT_PROVIDER", "local")  # read when a run starts, not at import
    assert cutouts.settings().provider == "local" and cutouts.in_process


def test_grabcut_by_configuration():
    provider = resource(provider="local", threads=1).get_provider("shop")
    assert isinstance(provider, LocalCutouts) and provider.model_id.startswith("local-grabcut")


def test_a_missing_or_corrupted_model_file_fails_with_the_expected_sha256(tmp_path):
    damaged = tmp_path / "u2netp.onnx"
    damaged.write_bytes(b"\x08\x07 not the model")
    with pytest.raises(ModelFileError, match=f"corrupted.*{MODEL_SHA256}"):
        resource(u2netp_model=str(damaged)).get_provider("shop")
    with pytest.raises(ModelFileError, match=f"not found.*{MODEL_SHA256}"):
        resource(u2netp_model=str(tmp_path / "missing.onnx")).get_provider("shop")


@pytest.mark.integration
def test_workers_can_read_the_model_from_the_pipeline_bucket(s3_env, s3_client, tmp_path):
    from orchestration.environment import s3_from_env

    bucket, key = s3_env["PIPELINE_BUCKET"], "models/u2netp.onnx"
    s3_client.upload_file(str(DEFAULT_MODEL_PATH), bucket, key)
    cache = tmp_path / "cache"
    settings = {"u2netp_model": f"s3://{bucket}/{key}", "onnx_cache_dir": str(cache)}
    provider = CutoutResource(s3=s3_from_env(), **settings).get_provider("shop")
    assert isinstance(provider, U2netpCutouts) and provider.model_path.parent == cache
    assert provider.model_id.startswith(f"u2netp-{MODEL_SHA256}-")
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"an older export")  # a new ETag
    with pytest.raises(ModelFileError, match=f"corrupted.*{MODEL_SHA256}"):
        CutoutResource(s3=s3_from_env(), **settings).get_provider("shop")
