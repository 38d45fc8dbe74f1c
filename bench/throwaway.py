"""A SeaweedFS of a benchmark's own, in a temporary folder, with the pipeline env set."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestration.local_s3 import LocalS3, _free_port


def _exit(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def throwaway_s3(name: str) -> Iterator[Path]:
    """Start it, point this process's S3 and Dagster settings at it, stop it after: also
    when the benchmark is stopped with SIGTERM (``kill PID``), which would otherwise end
    the process without stopping the server it started."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    server = LocalS3(workdir / "s3", s3_port=_free_port())
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit) if main else None
    state = server.start()
    try:
        os.environ.update(state.env())
        (workdir / "dagster_home").mkdir()
        os.environ.update(UPLOADS_BUCKET="bench-uploads", PIPELINE_BUCKET="bench-pipeline",
                          DAGSTER_HOME=str(workdir / "dagster_home"))  # fmt: skip
        yield workdir
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
