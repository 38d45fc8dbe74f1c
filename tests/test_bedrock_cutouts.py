"""BedrockCutouts against the local Bedrock Runtime stand-in: real boto3, real HTTP."""

from __future__ import annotations

import base64
import io
import logging
import time

import numpy as np
import pytest
from PIL import Image

from photogroup.ratelimit import TokenBucket, most_in_window
from resources import bedrock_cutouts
from resources.bedrock_cutouts import MAX_SIDE, BedrockCutouts, encode_image
from tests.standins.bedrock_runtime import (
    ACCESS_KEY_ID,
    SECRET,
    SESSION_TOKEN,
    BedrockRuntimeStandIn,
    client_settings,
)
from tests.standins.pictures import refused, shapes
from tests.standins.server import refusing_url

TOKEN = SESSION_TOKEN
PATH = "/model/amazon.titan-image-generator-v2%3A0/invoke"
picture = shapes


def magenta_corner(seed: int) -> Image.Image:
    return refused(picture(seed)[0])


def make_cutouts(standin: BedrockRuntimeStandIn, **overrides) -> BedrockCutouts:
    return BedrockCutouts.from_settings(**client_settings(standin, **overrides))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def test_masks_are_the_alpha_at_the_input_size():
    pictures = [picture(seed, size) for seed, size in enumerate([(48, 40), (64, 64), (31, 57)])]
    with BedrockRuntimeStandIn() as standin:
        cutouts = make_cutouts(standin)
        outcomes = cutouts.cut_out([img for img, _ in pictures])
        requests = list(standin.requests)
    for outcome, (img, expected) in zip(outcomes, pictures, strict=True):
        assert outcome.error is None, outcome.error
        assert outcome.mask.mode == "L" and outcome.mask.size == img.size
        # PNG both ways and no resize: exactly the stand-in's mask.
        np.testing.assert_array_equal(np.asarray(outcome.mask) == 255, expected)
        assert outcome.prediction_id and outcome.prediction_id.startswith("standin-")
        assert outcome.seconds > 0
    assert cutouts.model_id == "bedrock-titan-image-generator-v2-0-background-removal-1408"
    assert {r.path for r in requests} == {PATH}
    assert all(r.signed and r.task_type == "BACKGROUND_REMOVAL" for r in requests)
    assert sorted(r.image_size for r in requests) == sorted(img.size for img, _ in pictures)
    assert cutouts.cut_out([]) == []
    stats = cutouts.stats()
    assert stats["requests"] == 3 and stats["images_succeeded"] == 3
    assert stats["images_downscaled"] == 0 and stats["outputs_resized"] == 0
    assert 0 < stats["latency_p50_seconds"] <= stats["latency_p95_seconds"]


def test_large_images_are_downscaled_and_masks_scaled_back():
    big, expected = picture(7, (2000, 1500))
    with BedrockRuntimeStandIn() as standin:
        cutouts = make_cutouts(standin)
        (outcome,) = cutouts.cut_out([big])
        (request,) = standin.requests
    assert request.status == 200 and request.image_size == (MAX_SIDE, 1056)
    assert outcome.mask.size == big.size
    assert iou(np.asarray(outcome.mask) >= 128, expected) > 0.97
    stats = cutouts.stats()
    assert stats["images_downscaled"] == 1 and stats["outputs_resized"] == 1


def test_an_output_of_another_size_is_resized_to_the_input():
    img, expected = picture(3, (80, 60))
    with BedrockRuntimeStandIn(cutout_scale=0.5) as standin:
        cutouts = make_cutouts(standin)
        (outcome,) = cutouts.cut_out([img])
    assert outcome.mask.size == img.size
    assert iou(np.asarray(outcome.mask) >= 128, expected) > 0.8
    assert cutouts.stats()["outputs_resized"] == 1


def test_throttles_server_errors_and_model_timeouts_are_retried_and_counted():
    # One thread: requests 1-2 are 429s, 4 a 500, 6 a 503, 7 a 408 ModelTimeoutException.
    with BedrockRuntimeStandIn(throttle_first=2, fail_requests={4: 500, 6: 503, 7: 408}) as s:
        cutouts = make_cutouts(s, max_concurrency=1)
        pictures = [picture(seed) for seed in range(4)]
        outcomes = cutouts.cut_out([img for img, _ in pictures])
        statuses = [r.status for r in sorted(s.requests, key=lambda r: r.seq)]
    for outcome, (_, expected) in zip(outcomes, pictures, strict=True):
        assert outcome.error is None, outcome.error
        np.testing.assert_array_equal(np.asarray(outcome.mask) == 255, expected)
    assert statuses == [429, 429, 200, 500, 200, 503, 408, 200, 200]
    stats = cutouts.stats()
    assert stats["requests"] == stats["limiter_requests"] == 9
    assert stats["throttles"] == stats["provider_throttles"] == 2
    assert stats["retries"] == stats["provider_retries"] == 5


def test_retries_give_up_after_max_attempts_with_the_reason():
    with BedrockRuntimeStandIn(throttle_first=1000) as standin:
        cutouts = make_cutouts(standin, max_attempts=2)
        outcomes = cutouts.cut_out([picture(0)[0], picture(1)[0]])
        requests = len(standin.requests)
    assert requests == 4
    for outcome in outcomes:
        assert outcome.mask is None
        assert outcome.error.startswith("ThrottlingException: ")
        assert outcome.error.endswith("(gave up after 2 attempts)")
    assert cutouts.stats()["images_failed"] == 2


def test_read_timeouts_and_connection_errors_are_retried():
    with BedrockRuntimeStandIn(slow_requests={1: 3.0}) as standin:
        cutouts = make_cutouts(standin, timeout_seconds=0.3, max_concurrency=1)
        (outcome,) = cutouts.cut_out([picture(0)[0]])
        requests = len(standin.requests)
    assert outcome.ok and requests == 2
    assert cutouts.stats()["retries"] == 1

    # Nothing listens there: connections are refused.
    gone = BedrockCutouts.from_settings(
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
    (outcome,) = gone.cut_out([picture(0)[0]])
    assert "EndpointConnectionError" in outcome.error and "2 attempts" in outcome.error
    assert gone.stats()["retries"] == 1


def test_a_rejected_image_fails_alone_with_its_reason():
    pictures = [picture(seed) for seed in range(4)]
    images = [img for img, _ in pictures]
    images.insert(2, magenta_corner(9))
    with BedrockRuntimeStandIn() as standin:
        cutouts = make_cutouts(standin)
        outcomes = cutouts.cut_out(images)
        requests = len(standin.requests)
    rejected = outcomes.pop(2)
    assert rejected.mask is None and rejected.prediction_id
    assert rejected.error == (
        "ValidationException: The provided image is not supported by this stand-in."
    )
    for outcome, (_, expected) in zip(outcomes, pictures, strict=True):
        np.testing.assert_array_equal(np.asarray(outcome.mask) == 255, expected)
    assert requests == 5  # a 400 is not retried
    stats = cutouts.stats()
    assert stats["retries"] == 0 and stats["images_failed"] == 1
    assert stats["images_succeeded"] == 4


def test_a_corrupt_image_fails_before_sending():
    data = io.BytesIO()
    picture(0, (200, 150))[0].save(data, format="JPEG")
    truncated = Image.open(io.BytesIO(data.getvalue()[: len(data.getvalue()) // 2]))
    with BedrockRuntimeStandIn() as standin:
        cutouts = make_cutouts(standin)
        bad, good = cutouts.cut_out([truncated, picture(1)[0]])
        requests = len(standin.requests)
    assert bad.mask is None and bad.error.startswith("encode_error: OSError")
    assert good.ok and requests == 1


def test_access_denied_fails_at_once_and_stops_the_rest():
    with BedrockRuntimeStandIn(fail_requests={1: 403}) as standin:
        cutouts = make_cutouts(standin, max_concurrency=1)
        outcomes = cutouts.cut_out([picture(seed)[0] for seed in range(3)])
        requests = len(standin.requests)
        # The next call starts afresh (the stand-in refuses request 1 only).
        (again,) = cutouts.cut_out([picture(0)[0]])
    assert requests == 1
    assert outcomes[0].error.startswith("AccessDeniedException: ")
    for outcome in outcomes[1:]:
        assert outcome.error.startswith("not sent: an earlier request was refused")
    assert cutouts.stats()["retries"] == 0
    assert again.ok


def test_requests_per_minute_is_respected_on_a_scaled_clock():
    # A "minute" of 3 s: the provider allows 30 requests in any trailing 3 s and answers
    # 429 beyond; the client's bucket runs at 90 % of it on a clock 20 x faster.
    scale = 0.05
    limiter = TokenBucket.for_limit(
        30,
        clock=lambda: time.monotonic() / scale,
        sleep=lambda seconds: time.sleep(seconds * scale),
    )
    with BedrockRuntimeStandIn(quota=(30, 60 * scale)) as standin:
        cutouts = make_cutouts(standin, limiter=limiter, max_concurrency=4)
        outcomes = cutouts.cut_out([picture(seed)[0] for seed in range(32)])
        arrivals = standin.arrivals()
        statuses = {r.status for r in standin.requests}
    assert all(o.ok for o in outcomes)
    assert statuses == {200}  # the provider's window never fired
    assert len(arrivals) == 32
    assert most_in_window(arrivals, 60 * scale) <= 27 + 1  # rate x window + burst
    assert arrivals[-1] - arrivals[0] >= 31 / 27 * 60 * scale - 0.1
    stats = cutouts.stats()
    assert stats["limiter_requests"] == 32 and stats["limiter_waits"] >= 20


def test_concurrency_is_bounded():
    with BedrockRuntimeStandIn(latency=0.15) as standin:
        cutouts = make_cutouts(standin, max_concurrency=3)
        started = time.monotonic()
        outcomes = cutouts.cut_out([picture(seed)[0] for seed in range(9)])
        elapsed = time.monotonic() - started
        in_flight = standin.max_in_flight
    assert all(o.ok for o in outcomes)
    assert in_flight == 3
    assert cutouts.stats()["requests_in_flight_max"] == 3
    assert elapsed >= 3 * 0.15  # three rounds of three


def test_secrets_never_reach_reasons_stats_or_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="resources.bedrock_cutouts")
    with BedrockRuntimeStandIn(fail_requests={2: 500}) as standin:
        cutouts = make_cutouts(standin, max_concurrency=1, max_attempts=1)
        outcomes = cutouts.cut_out([magenta_corner(1), picture(0)[0]])
    assert not any(o.ok for o in outcomes)
    text = " ".join([*(o.error for o in outcomes), str(cutouts.stats()), repr(cutouts)])
    text += caplog.text
    assert "ValidationException" in caplog.text
    for secret in (SECRET, TOKEN):
        assert secret not in text
        assert secret not in repr(vars(cutouts))


def decoded(encoded: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_encode_image_keeps_small_images_and_limits_large_ones(monkeypatch):
    small, _ = picture(0, (300, 200))
    encoded, downscaled = encode_image(small)
    assert not downscaled
    np.testing.assert_array_equal(np.asarray(decoded(encoded)), np.asarray(small))  # lossless
    encoded, downscaled = encode_image(Image.new("RGB", (500, 3000), (10, 20, 30)))
    assert downscaled and decoded(encoded).size == (235, MAX_SIDE)
    # A PNG over the byte limit shrinks until it fits (noise barely compresses).
    monkeypatch.setattr(bedrock_cutouts, "MAX_IMAGE_BYTES", 50_000)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), np.uint8))
    encoded, downscaled = encode_image(noise)
    assert downscaled and len(base64.b64decode(encoded)) <= 50_000
    assert max(decoded(encoded).size) < 300


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_side"):
        BedrockCutouts(client=None, max_side=10)
    with pytest.raises(ValueError, match="max_concurrency"):
        BedrockCutouts(client=None, max_concurrency=0)
    with pytest.raises(ValueError, match="max_attempts"):
        BedrockCutouts(client=None, max_attempts=0)
    assert BedrockCutouts(client=None, max_side=1024).model_id.endswith("-1024")
