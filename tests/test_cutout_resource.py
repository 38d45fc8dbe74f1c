"""The cut-out resource picks u2netp unless configured otherwise; GrabCut stays one setting
away; a bad model file fails the run with the pinned SHA-256 in the message."""

import os

import pytest

from orchestration.definitions import DEFAULT_CUTOUTS, defs
from photogroup.cutout_providers import LocalCutouts
from photogroup.u2netp import MODEL_SHA256, ModelFileError, U2netpCutouts
from resources.cutouts import CutoutResource
from resources.s3 import S3Resource


def resource(**settings) -> CutoutResource:
    return CutoutResource(s3=S3Resource(), **settings)


def test_u2netp_is_the_default_provider():
    assert (
        DEFAULT_CUTOUTS == "u2netp" and CutoutResource.model_fields["provider"].default == "u2netp"
    )
    provider = resource().get_provider("shop")
    assert isinstance(provider, U2netpCutouts) and provider.workers >= 1
    assert MODEL_SHA256 in provider.model_id and resource().in_process


def test_the_definitions_use_the_default_unless_cutout_provider_says_otherwise():
    expected = os.environ.get("CUTOUT_PROVIDER", "u2netp")
    assert defs.resources["cutouts"].provider == expected


def test_grabcut_by_configuration():
    provider = resource(provider="local", threads=1).get_provider("shop")
    assert isinstance(provider, LocalCutouts) and provider.model_id.startswith("local-grabcut")


def test_a_corrupted_model_file_fails_with_the_expected_sha256(tmp_path):
    damaged = tmp_path / "u2netp.onnx"
    damaged.write_bytes(b"\x08\x07 not the model")
    with pytest.raises(ModelFileError, match=f"corrupted.*{MODEL_SHA256}"):
        resource(u2netp_model=str(damaged)).get_provider("shop")
    with pytest.raises(FileNotFoundError):
        resource(u2netp_model=str(tmp_path / "missing.onnx")).get_provider("shop")
