"""Definitions, partitions, jobs and the command line of the shop-photo pipeline."""

import pandas as pd

# pandas 3 keeps strings in Arrow arrays, and a group-by on them starts Arrow's C++ thread
# pool; a short process (the CLI, a run worker) can then abort at exit with "terminate
# called without an active exception" (apache/arrow#34314; seen in CI after `groups`
# printed). Our tables are one batch each, so Python-backed strings cost nothing we
# measured. Every entry point (Definitions, CLI, review app) imports this package first.
pd.set_option("mode.string_storage", "python")
