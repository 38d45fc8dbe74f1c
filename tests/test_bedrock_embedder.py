"""BedrockEmbedder against the local Bedrock Runtime stand-in: real boto3, real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from photogroup.embed import Embedder, embed_with_failures
from photogroup.ratelimit import TokenBucket, most_in_window
from resources.bedrock_embedder import BedrockEmbedder, EmbeddingFailed
from tests.standins.bedrock_runtime import (
    ACCESS_KEY_ID,
    SECRET,
    SESSION_TOKEN,
    BedrockRuntimeStandIn,
    client_settings,
)
from tests.standins.pictures import refused
from tests.standins.server import refusing_url

TOKEN = SESSION_TOKEN


@pytest.fixture
def standin() -> Iterator[BedrockRuntimeStandIn]:
    with BedrockRuntimeStandIn() as server:
        yield server


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth random RGB picture; different seeds look different."""
    cells = np.random.default_rng(seed).integers(0, 200, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.BILINEAR)


def magenta_corner(seed: int) -> Image.Image:
    return refused(picture(seed))


def make_embedder(standin: BedrockRuntimeStandIn, **overrides) -> BedrockEmbedder:
    settings = client_settings(standin, output_length=256) | overrides
    return BedrockEmbedder.from_settings(**settings)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_satisfies_the_embedder_protocol(standin):
    embedder = make_embedder(standin)
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 256
    assert embedder.model_id == "bedrock-titan-embed-image-v1-256"
    assert embedder.embed([]).shape == (0, 256)


def test_batch_equals_singles_and_rows_are_unit_float32(standin):
    embedder = make_embedder(standin)
    images = [picture(seed) for seed in range(6)]
    batch = embedder.embed(images)
    assert batch.dtype == np.float32 and batch.shape == (6, 256)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, img in enumerate(images):
        alone = embedder.embed([img])[0]
        assert float(batch[i] @ alone) > 0.999
        # What the provider computed from the pixels it decoded: PNG kept them exact.
        assert float(batch[i] @ unit(standin.embedding_for(img, 256))) > 0.999
    # Different pictures stay different (the stand-in is not returning a constant).
    assert float(batch[0] @ batch[1]) < 0.99
    assert all(r.signed and r.output_length == 256 for r in standin.requests)
    assert {r.path for r in standin.requests} == {"/model/amazon.titan-embed-image-v1/invoke"}


def test_model_id_is_percent_encoded_in_the_path(standin):
    embedder = make_embedder(standin, model="amazon.titan-embed-image-v1:0")
    embedder.embed([picture(0)])
    (request,) = standin.requests
    assert request.path == "/model/amazon.titan-embed-image-v1%3A0/invoke"
    assert request.model_id == "amazon.titan-embed-image-v1:0"
    assert embedder.model_id == "bedrock-titan-embed-image-v1-0-256"


def test_requests_per_minute_is_respected(standin):
    # 300/min = one request per 200 ms, burst 1, with four threads competing for tokens.
    # (At 600/min the stand-in once saw 7 arrivals in a 0.5 s window on a busy machine,
    # four pytest-xdist workers on two cores: more than 100 ms of jitter between a token
    # and its request's arrival. Same bound, twice the slack.)
    embedder = make_embedder(standin, requests_per_minute=300, burst=1, max_concurrency=4)
    embedder.embed([picture(seed) for seed in range(12)])
    arrivals = standin.arrivals()
    assert len(arrivals) == 12
    # At most burst + rate x window in any window (arrival jitter under 200 ms is absorbed).
    assert most_in_window(arrivals, 2.0) <= 1 + 10
    assert most_in_window(arrivals, 1.0) <= 1 + 5
    assert arrivals[-1] - arrivals[0] >= 11 * 0.2 - 0.1
    stats = embedder.stats()
    assert stats["limiter_requests"] == 12
    assert stats["limiter_waits"] >= 10
    assert stats["limiter_wait_seconds"] > 0


def test_headroom_keeps_a_provider_quota_from_throttling():
    # The provider allows 10 requests per trailing second; the bucket runs at 90 % of it.
    with BedrockRuntimeStandIn(quota=(10, 1.0)) as standin:
        embedder = make_embedder(
            standin, requests_per_minute=600, headroom=0.9, burst=1, max_concurrency=4
        )
        outcome = embedder.embed_with_failures([picture(seed) for seed in range(12)])
        statuses = [r.status for r in standin.requests]
    assert outcome.failures == {}
    assert statuses == [200] * 12
    assert embedder.stats()["provider_throttles"] == 0


def test_throttling_is_retried_and_counted():
    with BedrockRuntimeStandIn(throttle_first=3) as standin:
        embedder = make_embedder(standin, max_concurrency=2)
        images = [picture(seed) for seed in range(5)]
        outcome = embedder.embed_with_failures(images)
        statuses = sorted(r.status for r in standin.requests)
    assert outcome.failures == {}
    assert np.isfinite(outcome.vectors).all()
    stats = embedder.stats()
    assert stats["provider_throttles"] == 3
    assert stats["provider_retries"] == 3
    # Exactly one HTTP request per attempt: botocore did not retry behind our back.
    assert statuses == [200] * 5 + [429] * 3
    assert stats["limiter_requests"] == 8


def test_throttling_that_never_ends_fails_only_after_max_attempts():
    with BedrockRuntimeStandIn(throttle_first=1000) as standin:
        embedder = make_embedder(standin, max_attempts=3)
        outcome = embedder.embed_with_failures([picture(0), picture(1)])
        requests = len(standin.requests)
    assert set(outcome.failures) == {0, 1}
    assert all("ThrottlingException" in r and "3 attempts" in r for r in outcome.failures.values())
    assert np.isnan(outcome.vectors).all()
    assert requests == 6
    assert embedder.stats()["provider_throttles"] == 6


def test_a_refused_image_fails_alone_with_its_error_code(standin):
    embedder = make_embedder(standin)
    images = [picture(0), picture(1), magenta_corner(2), picture(3), picture(4)]
    outcome = embed_with_failures(embedder, images)
    assert list(outcome.failures) == [2]
    assert outcome.failures[2].startswith("ValidationException: ")
    assert np.isnan(outcome.vectors[2]).all()
    ok = np.delete(outcome.vectors, 2, axis=0)
    np.testing.assert_allclose(np.linalg.norm(ok, axis=1), 1.0, atol=1e-5)
    assert len(standin.requests) == 5  # a 400 is not retried
    assert embedder.stats()["provider_retries"] == 0
    with pytest.raises(EmbeddingFailed, match=r"image 2: ValidationException") as info:
        embedder.embed(images)
    assert list(info.value.failures) == [2]


def test_access_denied_is_not_retried():
    with BedrockRuntimeStandIn(fail_requests={1: 403}) as standin:
        embedder = make_embedder(standin, max_concurrency=1)
        outcome = embedder.embed_with_failures([picture(0), picture(1)])
        requests = len(standin.requests)
    assert list(outcome.failures) == [0]
    assert outcome.failures[0].startswith("AccessDeniedException: ")
    assert requests == 2
    assert embedder.stats()["provider_retries"] == 0


@pytest.mark.parametrize("output_length", [512, 0, 1023, "1024", True, None])
def test_output_length_must_be_one_titan_supports(standin, output_length):
    with pytest.raises(ValueError, match="256, 384 or 1024"):
        make_embedder(standin, output_length=output_length)
    with pytest.raises(ValueError, match="256, 384 or 1024"):
        BedrockEmbedder(client=None, output_length=output_length)


@pytest.mark.parametrize("output_length", [256, 384, 1024])
def test_each_supported_output_length_is_requested_and_returned(standin, output_length):
    embedder = make_embedder(standin, output_length=output_length)
    rows = embedder.embed([picture(0)])
    assert rows.shape == (1, output_length) and embedder.dim == output_length
    assert embedder.model_id == f"bedrock-titan-embed-image-v1-{output_length}"
    assert [r.output_length for r in standin.requests] == [output_length]


def test_server_errors_are_retried():
    with BedrockRuntimeStandIn(fail_requests={1: 500, 2: 503}) as standin:
        embedder = make_embedder(standin, max_concurrency=1)
        outcome = embedder.embed_with_failures([picture(0), picture(1)])
        statuses = [r.status for r in sorted(standin.requests, key=lambda r: r.seq)]
    assert outcome.failures == {}
    assert statuses == [500, 503, 200, 200]
    stats = embedder.stats()
    assert stats["provider_retries"] == 2
    assert stats["provider_throttles"] == 0


def test_server_errors_that_persist_give_up_with_the_code():
    with BedrockRuntimeStandIn(fail_requests={1: 503, 2: 503}) as standin:
        embedder = make_embedder(standin, max_attempts=2, max_concurrency=1)
        outcome = embedder.embed_with_failures([picture(0), picture(1)])
    assert list(outcome.failures) == [0]
    assert "ServiceUnavailableException" in outcome.failures[0]
    assert "2 attempts" in outcome.failures[0]
    assert np.isfinite(outcome.vectors[1]).all()


def test_read_timeout_is_retried():
    with BedrockRuntimeStandIn(slow_requests={1: 3.0}) as standin:
        embedder = make_embedder(standin, timeout_seconds=0.3, max_concurrency=1)
        outcome = embedder.embed_with_failures([picture(0)])
        requests = len(standin.requests)
    assert outcome.failures == {}
    assert requests == 2
    assert embedder.stats()["provider_retries"] == 1


def test_connection_errors_are_retried_then_reported():
    embedder = BedrockEmbedder.from_settings(
        "us-east-1",
        refusing_url(),
        requests_per_minute=60_000,
        max_attempts=2,
        timeout_seconds=1.0,
        connect_timeout_seconds=1.0,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET,
        backoff_base=0.01,
    )
    outcome = embedder.embed_with_failures([picture(0)])
    assert "EndpointConnectionError" in outcome.failures[0]
    assert "2 attempts" in outcome.failures[0]
    assert embedder.stats()["provider_retries"] == 1


def test_secrets_never_reach_reasons_stats_or_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="resources.bedrock_embedder")
    with BedrockRuntimeStandIn(fail_requests={1: 403}, throttle_first=0) as standin:
        embedder = make_embedder(standin, max_concurrency=1, max_attempts=2)
        outcome = embedder.embed_with_failures([picture(0), magenta_corner(1)])
    assert set(outcome.failures) == {0, 1}
    text = " ".join([*outcome.failures.values(), str(embedder.stats()), repr(embedder)])
    text += caplog.text
    for secret in (SECRET, TOKEN):
        assert secret not in text
        assert secret not in repr(vars(embedder))


def test_reasons_redact_credential_shaped_text():
    clip = BedrockEmbedder(client=None).clip
    reason = clip(
        "Could not connect to https://user:pa55@bedrock.example/ with "
        "Credential=AKIAABCDEFGHIJKLMNOP/20260101 Signature=abc123 X-Amz-Security-Token=tok"
    )
    for leaked in ("pa55", "AKIAABCDEFGHIJKLMNOP", "abc123"):
        assert leaked not in reason
    assert reason.endswith("X-Amz-Security-Token=***")
    assert len(clip("x" * 1000)) == 300


def test_a_shared_limiter_can_be_injected(standin):
    bucket = TokenBucket(60_000, burst=5)
    embedder = BedrockEmbedder(
        make_embedder(standin)._client, output_length=256, limiter=bucket, backoff_base=0.01
    )
    embedder.embed([picture(0), picture(1)])
    assert embedder.limiter is bucket
    assert bucket.stats.requests == 2
