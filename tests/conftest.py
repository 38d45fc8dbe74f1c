"""Session SeaweedFS on free ports (always stopped, by the PID we started); per-test buckets."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from orchestration.local_s3 import LocalS3, LocalS3State, PortTaken, _free_port
from resources.s3 import client_config


class RedactedEnv(dict):
    """Shown in failure reports without the secret key."""

    def __repr__(self) -> str:
        return repr({k: "***" if "SECRET" in k else v for k, v in self.items()})


#: Started first under pytest-xdist (``./dev test`` runs ``-n 4 --dist loadscope``): the
#: longest tests, which would otherwise be the tail of the run, slowest first.
RUN_FIRST = (
    "tests/test_daemon_e2e.py",
    "tests/test_local_stack.py",
    "tests/test_distributed.py",
    "tests/test_product_cutouts.py",
    "tests/test_cli.py",
    "tests/test_upload_sensor.py",
    "tests/test_memo.py",
    "tests/test_faults.py",
    "tests/test_catalog.py",
)
#: Files whose tests share nothing but the session SeaweedFS: under pytest-xdist each of
#: their tests goes to whichever worker is free. Every other file runs on one worker, in
#: file order, so a module-scoped fixture is built once (test_distributed's and
#: test_local_stack's last tests stop what their module started).
SPREAD = (
    "tests/test_cli.py",
    "tests/test_memo.py",
    "tests/test_pipeline.py",
    "tests/test_upload_sensor.py",
    "tests/test_faults.py",
    "tests/test_product_cutouts.py",
    "tests/test_grouping_edits.py",
)
#: Files that share a session fixture of their own (the review app's stack and browser).
SHARED = {"tests/test_review_app.py": "review", "tests/test_review_browser.py": "review"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the session SeaweedFS is an integration test, marked or not, so
    the fast tier (``-m "not integration"``) never starts it. The slowest files come first
    (RUN_FIRST), each keeping its tests' order."""
    for item in items:
        if "seaweed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    rank = {path: i for i, path in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.hookimpl(optionalhook=True)  # only with pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadscope`` with our units of work: a file (SHARED: files together),
    or a single test of a SPREAD file. (xdist's loadgroup markers would say the same per
    test, but xdist 3.8 cannot apply them under pytest 9.2, whose node ids are computed.)"""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return nodeid if path in SPREAD else SHARED.get(path, path)

    return Scheduling(config, log)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3State]:
    folder = tmp_path_factory.mktemp("seaweedfs")
    for attempt in range(3):  # another worker's server can take the port chosen meanwhile
        server = LocalS3(folder, s3_port=_free_port())
        try:
            state = server.start()
            break
        except PortTaken:
            if attempt == 2:
                raise
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
