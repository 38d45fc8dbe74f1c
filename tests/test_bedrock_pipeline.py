"""The bedrock provider inside the pipeline: real boto3 and HTTP to a local stand-in of
InvokeModel, real S3. A refused image is reported, not memoised, and retried next run."""

from __future__ import annotations

import io

import dagster as dg
import pytest
from PIL import Image

from orchestration.definitions import env_s3, pipeline_resources
from resources.embedder import EmbedderResource
from tests.helpers import GROUPING, materialise, metadata, read_table, upload
from tests.standins.bedrock_runtime import bedrock_runtime

pytestmark = pytest.mark.integration


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def pictures() -> dict[str, bytes]:
    from photogroup.samples import load_photo

    files = {}
    for name in ("astronaut", "coffee", "chelsea"):
        img = load_photo(name)
        img.thumbnail((256, 256))
        files[f"{name}.png"] = png(img)
    refused = load_photo("rocket")
    refused.thumbnail((256, 256))
    refused.paste((255, 0, 255), (0, 0, 8, 8))  # the stand-in refuses magenta-corner images
    files["refused.png"] = png(refused)
    return files


def test_bedrock_embeddings_record_refusals_and_retry_them(s3_env, s3_client):
    files = pictures()
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "b1", files)
    with bedrock_runtime(throttle_first=2) as standin, dg.instance_for_test() as instance:
        s3 = env_s3()
        embedder = EmbedderResource(
            provider="bedrock",
            bedrock_endpoint_url=standin.endpoint_url,
            bedrock_region="us-east-1",
            bedrock_output_length=256,
            bedrock_requests_per_minute=6000,
            s3=s3,
        )
        resources = {**pipeline_resources(s3), "embedder": embedder}
        first = materialise(instance, "shop/b1", resources, assets=GROUPING)
        assert first.success
        meta = metadata(first, "image_embeddings")
        assert meta["failed"] == 1
        assert meta["provider_throttles"] == 2
        assert meta["provider_retries"] >= 2
        assert "refused.png" in meta["failures"]
        assert "ValidationException" in meta["failures"]
        checks = {c.check_name: c.passed for c in first.get_asset_check_evaluations()}
        assert checks["every_accepted_image_has_an_embedding"] is False
        assert checks["every_image_in_exactly_one_group"] is True
        clusters = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "image_clusters", "shop/b1")
        assert set(clusters.file) == set(files)
        # The failure is a row of the table, with its status and the provider's reason.
        table = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "image_embeddings", "shop/b1")
        assert set(table.file) == set(files)
        rows = table.set_index("file")
        assert rows.status.to_dict() == {f: "failed" if f == "refused.png" else "ok" for f in files}
        assert "ValidationException" in rows.reason["refused.png"]
        assert rows.embedding["refused.png"] is None
        assert (rows.reason.drop("refused.png") == "").all()
        assert all(len(v) == 256 for v in rows.embedding.drop("refused.png"))

        sent_before = len(standin.requests)
        second = materialise(instance, "shop/b1", resources, assets=GROUPING)
        meta = metadata(second, "image_embeddings")
        assert (meta["memo_hits"], meta["memo_misses"], meta["failed"]) == (3, 1, 1)
        # Only the refused image went to the provider again.
        assert len(standin.requests) - sent_before == 1
