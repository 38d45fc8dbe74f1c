"""ReplicateCutouts against the local Replicate predictions stand-in: real requests, real HTTP.

The stand-in runs at ``SCALE`` (its latencies and its per-minute window are multiplied by
it) and so does the client (poll interval, backoff, timeouts, the limiter's clock), so a
"2-10 s" prediction takes 0.1-0.5 s and a "minute" 3 s; times below are in wall seconds.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from photogroup.ratelimit import TokenBucket, most_in_window
from resources.replicate_cutouts import ReplicateCutouts, _retry_after, secret_token
from tests.standins.pictures import refused, shapes
from tests.standins.replicate_api import VERSION, ReplicateStandIn, scaled_limiter

SCALE = 0.05
TOKEN = "r8_StandInTok3nDoNotLog7f3a9c1e"
picture = shapes


def magenta_corner(seed: int) -> Image.Image:
    return refused(picture(seed)[0])


def make_client(standin: ReplicateStandIn, **overrides) -> ReplicateCutouts:
    """The client's real-time settings, scaled like the stand-in."""
    settings = {
        "base_url": standin.base_url,
        "limiter": scaled_limiter(standin.create_limit_per_minute or 600, SCALE),
        "poll_limiter": scaled_limiter(3000, SCALE),
        "create_concurrency": 4,
        "poll_concurrency": 8,
        "poll_interval": 0.5 * SCALE,
        "prediction_timeout": 300 * SCALE,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_retries": 4,
        "backoff_base": 1.0 * SCALE,
        "backoff_cap": 8.0 * SCALE,
    }
    settings.update(overrides)
    token = settings.pop("api_token", standin.token)
    return ReplicateCutouts(token, settings.pop("version", VERSION), **settings)


def test_two_phases_rate_limit_retries_and_masks():
    # Requests 1-45 are the creates (40 + two 429s + three faults): 4 and 7 answer 5xx, 10
    # drops the connection; request 50 is in phase 2 (a poll or a download) and answers 502.
    standin = ReplicateStandIn(
        create_limit_per_minute=30,
        throttle_first=2,
        fail_requests={4: 503, 7: 500, 50: 502},
        drop_requests={10},
        time_scale=SCALE,
        token=TOKEN,
    )
    pictures = [picture(seed) for seed in range(39)]
    images = [img for img, _ in pictures]
    images.insert(17, magenta_corner(99))
    with standin:
        client = make_client(standin)
        outcomes = client.cut_out(images)
    assert len(outcomes) == 40

    failed = outcomes.pop(17)
    assert failed.mask is None and failed.prediction_id
    assert failed.error.startswith("prediction failed: The model could not find a subject")
    for outcome, (img, expected) in zip(outcomes, pictures, strict=True):
        assert outcome.error is None, outcome.error
        assert outcome.mask.mode == "L" and outcome.mask.size == img.size
        np.testing.assert_array_equal(np.asarray(outcome.mask) == 255, expected)
        assert 0 < outcome.seconds < 30

    # Phase 1 (every create, retries included) is over before phase 2 sends anything.
    creates = standin.recorded("create")
    later = [r for r in standin.recorded() if r.kind in ("get", "file")]
    assert len(creates) == 45 and len(later) >= 80
    assert max(r.arrived for r in creates) < min(r.arrived for r in later)
    assert sum(r.status == 201 for r in creates) == 40
    assert [r.status for r in creates if r.status != 201] == [429, 429, 503, 500, 0]

    # The bucket (90% of 30/min, on the scaled clock) kept every trailing "minute" under 30
    # create requests, 429'd and failed ones included, and the stand-in's window never fired.
    assert most_in_window([r.arrived for r in creates], standin.window) <= 30
    assert creates[-1].arrived - creates[0].arrived > standin.window  # more than one window
    assert all(r.retry_after == pytest.approx(SCALE) for r in creates if r.status == 429)

    (faulted,) = [r for r in standin.recorded() if r.seq == 50]
    assert faulted.kind in ("get", "file") and faulted.status == 502
    stats = client.stats()
    assert stats["limiter_requests"] == 45
    assert stats["provider_throttles"] == 2
    assert stats["provider_retries"] == 5  # two 429s, 503, 500, dropped connection
    assert stats["poll_retries"] == 1
    assert stats["predictions_created"] == 40
    assert stats["predictions_succeeded"] == 39
    assert stats["predictions_failed"] == 1 and stats["images_failed"] == 1
    assert stats["predictions_in_flight_max"] == 40
    assert 0 < stats["latency_p50_seconds"] <= stats["latency_p95_seconds"]


def test_retry_after_is_honoured_when_the_limiter_is_too_loose():
    # A bucket far above the provider's 10/min: the stand-in's window answers 429.
    standin = ReplicateStandIn(create_limit_per_minute=10, latency=(2, 4), time_scale=SCALE)
    images = [picture(seed)[0] for seed in range(13)]
    with standin:
        client = make_client(standin, limiter=TokenBucket(60_000, burst=100), create_concurrency=1)
        outcomes = client.cut_out(images)
    assert all(o.error is None for o in outcomes)
    creates = standin.recorded("create")
    throttled = [i for i, r in enumerate(creates) if r.status == 429]
    assert throttled and client.stats()["provider_throttles"] == len(throttled)
    for i in throttled:  # one thread: the next create is this one's retry
        assert creates[i + 1].arrived >= creates[i].arrived + creates[i].retry_after - 0.002
    assert sum(r.status == 201 for r in creates) == 13
    assert most_in_window([r.arrived for r in creates if r.status == 201], standin.window) <= 10


def test_wrong_token_is_a_per_image_401_without_the_token(caplog):
    caplog.set_level(logging.DEBUG)
    with ReplicateStandIn(time_scale=SCALE) as standin:
        client = make_client(standin, api_token=TOKEN, create_concurrency=2)
        outcomes = client.cut_out([picture(seed)[0] for seed in range(5)])
    assert all(o.mask is None for o in outcomes)
    assert "HTTP 401: You did not pass a valid authentication token" in outcomes[0].error
    assert all("HTTP 401" in o.error for o in outcomes)
    # Not retried, and the images after the refusal were not sent at all.
    creates = standin.recorded()
    assert 1 <= len(creates) <= 2 and {(r.kind, r.status) for r in creates} == {("create", 401)}
    assert client.stats()["provider_retries"] == 0
    assert sum(o.error.startswith("not sent:") for o in outcomes) >= 3
    for text in [*(o.error for o in outcomes), repr(client), caplog.text]:
        assert TOKEN not in text
    # The token is a pydantic SecretStr: neither its repr nor its str shows it.
    assert TOKEN not in repr(secret_token(TOKEN)) and TOKEN not in str(secret_token(TOKEN))
    assert secret_token(f" {TOKEN} ").get_secret_value() == TOKEN
    with pytest.raises(ValueError, match="non-empty"):
        secret_token("  ")


def test_other_4xx_fails_the_image_without_retrying():
    with ReplicateStandIn(time_scale=SCALE) as standin:
        client = make_client(standin, version="0" * 64)
        outcomes = client.cut_out([picture(seed)[0] for seed in range(3)])
    assert [o.error for o in outcomes] == ["HTTP 422: Invalid version or not permitted"] * 3
    assert [r.status for r in standin.recorded()] == [422] * 3
    assert client.stats()["provider_retries"] == 0


def test_a_prediction_past_its_timeout_is_cancelled():
    with ReplicateStandIn(latency=(100, 100), time_scale=SCALE) as standin:
        client = make_client(standin, prediction_timeout=2 * SCALE)
        outcomes = client.cut_out([picture(seed)[0] for seed in range(2)])
    assert all(o.mask is None and o.error.startswith("timed out after") for o in outcomes)
    cancels = standin.recorded("cancel")
    assert len(cancels) == 2 and {r.status for r in cancels} == {200}
    stats = client.stats()
    assert stats["predictions_timed_out"] == 2 and stats["cancel_requests"] == 2


def test_sequential_baseline_waits_for_each_prediction():
    pictures = [picture(seed) for seed in range(3)]
    with ReplicateStandIn(latency=(2, 4), time_scale=SCALE) as standin:
        client = make_client(standin)
        outcomes = client.create_and_wait_sequential([img for img, _ in pictures])
    for outcome, (_, expected) in zip(outcomes, pictures, strict=True):
        np.testing.assert_array_equal(np.asarray(outcome.mask) == 255, expected)
    kinds = [r.kind for r in standin.recorded()]
    # create, polls, download; then the next image.
    assert kinds.count("create") == 3 and kinds[0] == "create"
    for start in [i for i, kind in enumerate(kinds) if kind == "create"][1:]:
        assert kinds[start - 1] == "file"


def test_urls_and_retry_after_parsing():
    client = ReplicateCutouts(TOKEN, VERSION, base_url="https://api.example.com/")
    assert client._own_url("https://api.example.com/v1/predictions/abc") is not None
    # The token never follows a URL to another host.
    assert client._own_url("https://evil.example.com/v1/predictions/abc") is None
    assert client._own_url("http://api.example.com/v1/predictions/abc") is None
    assert _retry_after("2") == 2.0 and _retry_after("0.125") == 0.125
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert _retry_after("soon") is None and _retry_after(None) is None
    assert TOKEN not in client.clip(f"echoed Bearer {TOKEN} and {TOKEN}")
