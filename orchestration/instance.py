"""The local Dagster instance: a git-ignored DAGSTER_HOME with a dagster.yaml we write."""

from __future__ import annotations

import os
from pathlib import Path

from orchestration.local_s3 import REPO_ROOT

DEFAULT_DAGSTER_HOME = REPO_ROOT / ".local" / "dagster_home"

# SQLite run, event-log and schedule storage live under DAGSTER_HOME by default, so runs
# persist across restarts of `dagster dev`.
DAGSTER_YAML = """\
# Written by orchestration/instance.py (edit freely; it is not overwritten).
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
concurrency:
  # Queued runs: at most 4 at a time, 2 per tenant.
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: tenant
        value:
          applyLimitPerUniqueValue: true
        limit: 2
  # Assets in a pool run one at a time across all runs: "catalog" (catalog_index and
  # catalog_matches) reads, changes and writes a tenant's catalogue index.
  pools:
    default_limit: 1
"""


def ensure_dagster_home() -> Path:
    """Default DAGSTER_HOME to the repo's .local folder and write its dagster.yaml once."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home
