"""Accept: one Dagster run of the assets people's edits feed, followed in the instance.

The run executes in a child process (``python -m orchestration publish``) with a run id
chosen here, so the page can poll the instance for it from the first second; the child
is ours, tracked by its handle, and waited for when the app stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import dagster as dg

from orchestration.partitions import BatchKey
from orchestration.publish import PUBLISHED
from review.batches import IN_PROGRESS, NotFound

#: Seconds the app waits for publish runs when it stops before ending them (within the
#: 30 s in which ./dev up stops everything; see orchestration/stack.py).
STOP_GRACE = 15


class Publisher:
    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._children: dict[str, tuple[BatchKey, subprocess.Popen]] = {}
        self._lock = threading.Lock()
        self._logs = Path(tempfile.mkdtemp(prefix="review-publish-"))

    def start(self, batch: BatchKey, who: str) -> str:
        run_id = str(uuid.uuid4())
        command = [sys.executable, "-m", "orchestration", "publish", "--tenant", batch.tenant,
                   "--batch", batch.batch, "--run-id", run_id, "--who", who]  # fmt: skip
        with open(self._logs / f"{run_id}.log", "wb") as out:
            # In the app's process group: a supervisor stopping the app stops its runs too.
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                     env=dict(os.environ))  # fmt: skip
        with self._lock:
            self._children[run_id] = (batch, child)
        return run_id

    def running(self, batch: BatchKey) -> str | None:
        """The id of this app's publish run of ``batch`` still in progress, if any."""
        with self._lock:
            children = list(self._children.items())
        for run_id, (owner, child) in children:
            if owner == batch and child.poll() is None:
                return run_id
        return None

    def status(self, batch: BatchKey, run_id: str) -> dict:
        """The run's state and which published assets it has materialised."""
        run = self.instance.get_run_by_id(run_id)
        with self._lock:
            mine = self._children.get(run_id)
        if run is None:
            if mine is None or mine[0] != batch:
                raise NotFound(f"no run {run_id!r} for {batch.partition_key}")
            code = mine[1].poll()
            if code is None:
                return self._payload(run_id, "STARTING", [], finished=False, success=False)
            tail = (self._logs / f"{run_id}.log").read_text(errors="replace")[-400:]
            message = f"the run did not start (exit {code}): {tail}"
            return self._payload(run_id, "FAILURE", [], finished=True, success=False,
                                 message=message)  # fmt: skip
        if run.tags.get("dagster/partition") != batch.partition_key:
            raise NotFound(f"no run {run_id!r} for {batch.partition_key}")
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        done = sorted({r.event_log_entry.dagster_event.asset_key.path[-1] for r in records})
        finished = run.status not in IN_PROGRESS
        return self._payload(run_id, run.status.value, done, finished=finished,
                             success=run.status == dg.DagsterRunStatus.SUCCESS)  # fmt: skip

    @staticmethod
    def _payload(run_id, status, done, finished, success, message="") -> dict:
        return {"run_id": run_id, "status": status, "done": done, "assets": list(PUBLISHED),
                "finished": finished, "success": success, "message": message}  # fmt: skip

    def close(self) -> None:
        """Wait for our children (a run cut short would stay STARTED), then end them."""
        with self._lock:
            children = [child for _, child in self._children.values()]
        for child in children:
            try:
                child.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.terminate()
                child.wait(10)
