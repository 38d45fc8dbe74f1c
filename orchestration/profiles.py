"""Deployment profiles, chosen by one setting: ``PIPELINE_PROFILE=local|distributed``.

* ``local`` (default): SQLite instance under the git-ignored DAGSTER_HOME, the multiprocess
  executor, the embedded SeaweedFS.
* ``distributed``: run/event/schedule storage in PostgreSQL (``DAGSTER_POSTGRES_URL``), the
  queued run coordinator with per-tenant limits, and dagster-celery's executor on a Redis
  broker (``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``): steps of one run and runs of
  many batches spread over Celery workers on any number of machines.

The code is the same in both: only the instance's dagster.yaml and the executor differ.
"""

from __future__ import annotations

import os

import dagster as dg

PROFILES = ("local", "distributed")


def celery_config() -> dict:
    """dagster-celery's executor config; workers get the same block (local_cluster.py).

    acks_late + reject_on_worker_lost: a step whose worker dies is delivered again to
    another worker instead of being lost; its writes are idempotent (content-addressed memo
    entries, one Parquet object per partition), so running it twice duplicates nothing.
    Redis gives an unacknowledged task to another worker once it is older than
    ``CELERY_VISIBILITY_TIMEOUT`` seconds (default 3600), which must exceed the longest
    step: a step still running by then would be started a second time.
    """
    visibility = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
    transport = {
        "visibility_timeout": visibility,
        # Survivors look for orphaned tasks every few seconds, not every 100 s.
        "unacked_restore_interval": max(1, min(10, visibility // 10)),
        "unacked_restore_throttle": 1,
    }
    return {
        "broker": {"env": "CELERY_BROKER_URL"},
        "backend": {"env": "CELERY_RESULT_BACKEND"},
        "config_source": {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "broker_transport_options": transport,
        },
    }


def current_profile() -> str:
    profile = os.environ.get("PIPELINE_PROFILE", "local") or "local"
    if profile not in PROFILES:
        raise ValueError(f"PIPELINE_PROFILE={profile!r}: use one of {', '.join(PROFILES)}")
    return profile


def executor() -> dg.ExecutorDefinition:
    """The executor of the current profile."""
    if current_profile() == "distributed":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config(), name="celery")
    return dg.multiprocess_executor
