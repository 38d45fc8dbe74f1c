"""Session SeaweedFS on free ports (always stopped, by the PID we started); per-test buckets."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from orchestration.local_s3 import LocalS3, LocalS3State, _free_port
from resources.s3 import client_config


class RedactedEnv(dict):
    """Shown in failure reports without the secret key."""

    def __repr__(self) -> str:
        return repr({k: "***" if "SECRET" in k else v for k, v in self.items()})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the session SeaweedFS is an integration test, marked or not, so
    the fast tier (``-m "not integration"``) never starts it."""
    for item in items:
        if "seaweed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3State]:
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"), s3_port=_free_port())
    state = server.start()
    try:
        yield state
    finally:
        # Throwaway data: no need to wait out weed's ~16 s graceful stop (SIGKILL after 2 s).
        server.stop(timeout=2.0)


def _client(seaweed: LocalS3State):
    return boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
        config=client_config(),
    )


@pytest.fixture
def s3_client(seaweed: LocalS3State):
    return _client(seaweed)


def bucket_env(seaweed: LocalS3State, home: Path) -> RedactedEnv:
    """Fresh buckets and a DAGSTER_HOME under ``home``, as production settings would be."""
    suffix = uuid.uuid4().hex[:10]
    env = RedactedEnv(
        **seaweed.env(),
        UPLOADS_BUCKET=f"test-uploads-{suffix}",
        PIPELINE_BUCKET=f"test-pipeline-{suffix}",
        DAGSTER_HOME=str(home / "dagster_home"),
    )
    Path(env["DAGSTER_HOME"]).mkdir()
    client = _client(seaweed)
    for bucket in (env["UPLOADS_BUCKET"], env["PIPELINE_BUCKET"]):
        client.create_bucket(Bucket=bucket)
    return env


@pytest.fixture
def s3_env(
    seaweed: LocalS3State, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Fresh buckets and DAGSTER_HOME for one test, exported like production settings."""
    env = bucket_env(seaweed, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def subprocess_env(s3_env: dict[str, str]) -> dict[str, str]:
    """Environment for `python -m orchestration` children, pointing at the session S3."""
    return RedactedEnv({**os.environ, **s3_env})


# The review app's session stack (one seeded batch, one server), for its two test modules.
from tests.review_stack import review_stack  # noqa: E402, F401
