"""The Dagster instance: a DAGSTER_HOME with a dagster.yaml we write once, per profile.

``local``: SQLite storage under the git-ignored ``.local/dagster_home``. ``distributed``:
PostgreSQL storage (``DAGSTER_POSTGRES_URL``) under ``.local/dagster_home_distributed``
unless DAGSTER_HOME says otherwise; see orchestration/profiles.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestration.local_s3 import REPO_ROOT

DEFAULT_DAGSTER_HOME = REPO_ROOT / ".local" / "dagster_home"
DEFAULT_DISTRIBUTED_HOME = REPO_ROOT / ".local" / "dagster_home_distributed"

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


# Everything of the local file but the storage, which every machine must share.
DISTRIBUTED_YAML = (
    DAGSTER_YAML
    + """\
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
run_monitoring:
  # A run worker that dies (its machine lost) is marked failed instead of staying STARTED.
  enabled: true
  start_timeout_seconds: 180
"""
)


def ensure_dagster_home() -> Path:
    """Default DAGSTER_HOME to the repo's .local folder and write its dagster.yaml once."""
    from orchestration.profiles import current_profile

    distributed = current_profile() == "distributed"
    if distributed and not os.environ.get("DAGSTER_POSTGRES_URL"):
        raise ValueError("PIPELINE_PROFILE=distributed needs DAGSTER_POSTGRES_URL")
    default = DEFAULT_DISTRIBUTED_HOME if distributed else DEFAULT_DAGSTER_HOME
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(default)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DISTRIBUTED_YAML if distributed else DAGSTER_YAML)
    return home
