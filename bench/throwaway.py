"""A SeaweedFS of a benchmark's own, in a temporary folder, with the pipeline env set."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestration.local_s3 import LocalS3, _free_port


@contextmanager
def throwaway_s3(name: str) -> Iterator[Path]:
    """Start it, point this process's S3 and Dagster settings at it, stop it after."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    server = LocalS3(workdir / "s3", s3_port=_free_port())
    state = server.start()
    try:
        os.environ.update(state.env())
        (workdir / "dagster_home").mkdir()
        os.environ.update(UPLOADS_BUCKET="bench-uploads", PIPELINE_BUCKET="bench-pipeline",
                          DAGSTER_HOME=str(workdir / "dagster_home"))  # fmt: skip
        yield workdir
    finally:
        server.stop()
