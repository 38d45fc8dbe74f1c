"""The shared remote-provider base and the provider contract, without a network.

The retry loop is tenacity's, configured by RemoteClient: these tests pin what the
providers rely on (retryable errors only, full jitter, retry-after as a floor, the give-up
reason, the authorisation stop, counters) on scripted senders and a recorded sleep.
"""

from __future__ import annotations

import random

import pytest
from PIL import Image

from photogroup.cutout_providers import LocalCutouts
from photogroup.embed import LocalEmbedder
from photogroup.providers import CutoutProvider, Embedder, FallibleEmbedder, clip_reason
from photogroup.ratelimit import TokenBucket
from resources.bedrock_cutouts import BedrockCutouts
from resources.bedrock_embedder import BedrockEmbedder
from resources.cutouts import CutoutResource
from resources.embedder import EmbedderResource
from resources.provider_client import MAX_RETRY_AFTER, Failed, RemoteClient, Retryable
from resources.replicate_cutouts import ReplicateCutouts


class Script:
    """A sender that raises (or returns) the given outcomes in turn."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def client(max_attempts: int = 4, **kwargs) -> tuple[RemoteClient, list[float]]:
    slept: list[float] = []
    settings = {"backoff_base": 1.0, "backoff_cap": 8.0, "rng": random.Random(7)} | kwargs
    remote = RemoteClient(
        TokenBucket(60_000, burst=1000), max_attempts=max_attempts, sleep=slept.append, **settings
    )
    return remote, slept


def test_retryable_errors_are_retried_with_full_jitter_until_success():
    remote, slept = client()
    send = Script(Retryable("503"), Retryable("429", throttled=True), Retryable("timeout"), "ok")
    assert remote.call(send) == "ok"
    assert send.calls == 4
    # Full jitter: retry n sleeps uniform in [0, min(cap, base * 2**n)].
    assert len(slept) == 3 and all(0 <= s <= 2**n for n, s in enumerate(slept))
    stats = remote.stats()
    assert stats["provider_retries"] == 3 and stats["provider_throttles"] == 1
    assert stats["limiter_requests"] == 4  # every attempt took a token


def test_final_errors_are_not_retried():
    remote, slept = client()
    send = Script(Failed("ValidationException: bad image", status=400), "never")
    with pytest.raises(Failed, match="ValidationException"):
        remote.call(send)
    assert send.calls == 1 and slept == []
    assert remote.stats()["provider_retries"] == 0


def test_giving_up_names_the_last_reason_and_the_attempts():
    remote, slept = client(max_attempts=3)
    send = Script(*[Retryable("ThrottlingException", throttled=True)] * 3)
    with pytest.raises(Failed, match=r"^ThrottlingException \(gave up after 3 attempts\)$"):
        remote.call(send)
    assert send.calls == 3 and len(slept) == 2


def test_retry_after_is_a_floor_and_is_capped():
    remote, slept = client(backoff_base=0.01, backoff_cap=0.01)
    remote.call(Script(Retryable("429", throttled=True, retry_after=5.0), "ok"))
    assert slept == [5.0]
    remote, slept = client(backoff_base=0.01, backoff_cap=0.01)
    remote.call(Script(Retryable("429", throttled=True, retry_after=3600.0), "ok"))
    assert slept == [MAX_RETRY_AFTER]


def test_an_authorisation_failure_stops_the_rest_of_the_call_where_asked():
    remote, _ = client()
    remote.stop_on_auth_failure = True
    with pytest.raises(Failed, match="AccessDenied"):
        remote.call(Script(Failed("AccessDenied", auth=True)))
    later = Script("never sent")
    with pytest.raises(Failed, match=r"^not sent: an earlier request was refused \(AccessDenied"):
        remote.call(later)
    assert later.calls == 0
    # A new call (each) starts afresh.
    assert remote.each(lambda _: remote.call(Script("ok")), [1], workers=1, name="t") == ["ok"]


def test_without_the_stop_an_authorisation_failure_fails_only_its_image():
    remote, _ = client()
    with pytest.raises(Failed):
        remote.call(Script(Failed("AccessDenied", auth=True)))
    assert remote.call(Script("ok")) == "ok"


def test_clipping_redacts_secrets_and_patterns_and_keeps_one_short_line():
    remote, _ = client()
    remote.redactions = ReplicateCutouts.redactions
    remote._secrets = lambda: ("hunter2-secret",)  # type: ignore[method-assign]
    text = remote.clip("token r8_abcdefghijkl\nleaked hunter2-secret " + "x" * 400)
    assert "hunter2-secret" not in text and "r8_abcdefghijkl" not in text
    assert "\n" not in text and len(text) == 300 and text.endswith("...")
    assert clip_reason("a\n  b") == "a b"


def test_every_provider_implements_its_declared_protocol():
    assert isinstance(LocalEmbedder(), Embedder)
    assert isinstance(BedrockEmbedder(client=None), FallibleEmbedder)
    assert not isinstance(LocalEmbedder(), FallibleEmbedder)
    cutouts = [
        LocalCutouts(threads=1),
        BedrockCutouts(client=None),
        ReplicateCutouts("r8_token", "version"),
    ]
    for provider in cutouts:
        assert isinstance(provider, CutoutProvider), provider
        assert provider.cut_out([]) == []
        assert isinstance(provider.stats(), dict)
    assert isinstance(LocalCutouts(threads=1).cut_out([Image.new("RGB", (8, 8))])[0].ok, bool)


def test_provider_resources_describe_every_setting():
    # The launchpad shows these descriptions; the S3 dependency is a resource, not a setting.
    for resource in (CutoutResource, EmbedderResource):
        undescribed = [n for n, f in resource.model_fields.items() if not f.description]
        assert undescribed == ["s3"], resource.__name__
