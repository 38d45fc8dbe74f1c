"""Tables read and grouped by our processes start no Arrow thread pool: a short process
with one could abort at exit (apache/arrow#34314)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = r"""
import io, json, os, sys
if os.environ.get("IMPORT_ORCHESTRATION") == "1":
    import orchestration  # what every entry point imports first
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
from resources.parquet_io_manager import read_parquet_bytes

def threads():
    # Settled: a short-lived thread of some library's start-up must not count either way.
    import time
    last = -1
    for _ in range(20):
        now = len(os.listdir("/proc/self/task"))
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last

frame = pd.DataFrame({"sha256": [f"{i % 50:02x}" for i in range(2000)],
                      "file": [f"{i}.jpg" for i in range(2000)], "vector": [[0.5, 1.5]] * 2000})
buffer = io.BytesIO()
pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
before = threads()
back = read_parquet_bytes(buffer.getvalue())
read = threads()
first = back.groupby("sha256").file.min().to_dict()  # as `groups` lists a batch
pd.testing.assert_frame_equal(back, frame.astype(back.dtypes.to_dict()))
assert first["00"] == "0.jpg", first["00"]
print(json.dumps({"before": before, "read": read, "grouped": threads()}))
"""


def _threads(import_orchestration: bool) -> dict[str, int]:
    env = {**os.environ, "IMPORT_ORCHESTRATION": "1" if import_orchestration else "0"}
    # A fresh interpreter: an earlier test in this worker may have started Arrow's pools.
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         env=env, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reading_and_grouping_a_table_start_no_native_threads():
    threads = _threads(import_orchestration=True)
    assert threads["read"] <= threads["before"], threads
    assert threads["grouped"] <= threads["before"], threads


def test_the_check_sees_arrows_pool_without_the_setting():
    # Without the package's setting, pandas' Arrow strings start the pool on the group-by:
    # the test above can fail.
    threads = _threads(import_orchestration=False)
    assert threads["grouped"] > threads["before"], threads
