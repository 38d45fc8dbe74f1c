"""Reading a table back starts no Arrow thread pool (a CLI process could abort at exit)."""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = r"""
import io, json, os
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
from resources.parquet_io_manager import read_parquet_bytes

frame = pd.DataFrame({"file": [f"{i}.jpg" for i in range(2000)], "group": range(2000),
                      "vector": [[0.5, 1.5]] * 2000})
buffer = io.BytesIO()
pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
before = len(os.listdir("/proc/self/task"))
back = read_parquet_bytes(buffer.getvalue())
after = len(os.listdir("/proc/self/task"))
expected = pq.read_table(io.BytesIO(buffer.getvalue())).to_pandas()
pd.testing.assert_frame_equal(back, expected)
print(json.dumps({"before": before, "after": after,
                  "pooled": len(os.listdir("/proc/self/task")) - after}))
"""


def test_reading_a_table_starts_no_native_threads_and_matches_pyarrow():
    # A fresh interpreter: an earlier test in this worker may have started Arrow's pools.
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    threads = json.loads(out.stdout.strip().splitlines()[-1])
    assert threads["after"] == threads["before"], threads
    # The check can fail: pyarrow's own reader does start threads in the same process.
    assert threads["pooled"] > 0, threads
