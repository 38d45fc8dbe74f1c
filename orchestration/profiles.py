"""Deployment profiles, chosen by one setting: ``PIPELINE_PROFILE=local|distributed``.

* ``local`` (default): SQLite instance under the git-ignored DAGSTER_HOME, the multiprocess
  executor, the embedded SeaweedFS.
* ``distributed``: run/event/schedule storage in PostgreSQL (``DAGSTER_POSTGRES_URL``), the
  queued run coordinator with per-tenant limits, and dagster-celery's executor on a Redis
  broker (``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``): steps of one run and runs of
  many batches spread over Celery workers on any number of machines.

The code is the same in both: only the instance's dagster.yaml and the executor differ.
The executor is one definition, ``pipeline_executor``, whose config the launchpad shows; it
picks multiprocess or Celery when a run starts (config ``profile``, else
``PIPELINE_PROFILE``), so importing the definitions reads no environment.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.execution.retries import RetryMode, get_retries_config

from resources.run_settings import SettingError, read_setting

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
    visibility = read_setting("CELERY_VISIBILITY_TIMEOUT", int, 3600)
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
    """``$PIPELINE_PROFILE`` (read when called: at run launch or by a command), else local."""
    profile = os.environ.get("PIPELINE_PROFILE", "local") or "local"
    if profile not in PROFILES:
        raise SettingError(f"PIPELINE_PROFILE={profile!r}: use one of {', '.join(PROFILES)}")
    return profile


@dg.executor(
    name="pipeline",
    config_schema={
        "profile": dg.Field(
            dg.Noneable(dg.Enum("PipelineProfile", [dg.EnumValue(p) for p in PROFILES])),
            default_value=None,
            is_required=False,
            description="'local': one process per step on the run's machine; 'distributed': "
            "every step a Celery task (CELERY_BROKER_URL, CELERY_RESULT_BACKEND). Unset: "
            "$PIPELINE_PROFILE when the run starts, else 'local'.",
        ),
        "max_concurrent": dg.Field(
            dg.Noneable(int),
            default_value=None,
            is_required=False,
            description="local: steps at once (unset or 0: the number of CPUs).",
        ),
        "retries": get_retries_config(),
    },
    requirements=dg.multiple_process_executor_requirements(),
)
def pipeline_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Multiprocess or Celery, by the profile in force when the run starts."""
    config = init_context.executor_config
    if (config["profile"] or current_profile()) == "distributed":
        from dagster_celery.executor import CeleryExecutor

        return CeleryExecutor(
            retries=RetryMode.from_config(config["retries"]),  # type: ignore[arg-type]
            broker=_required("CELERY_BROKER_URL"),
            backend=_required("CELERY_RESULT_BACKEND"),
            # The workers were started with the same block (local_cluster.py, README).
            config_source=celery_config()["config_source"],
        )
    # Its config keys (max_concurrent, retries) are a subset of ours.
    return dg.multiprocess_executor.executor_creation_fn(init_context)  # type: ignore[misc]


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SettingError(f"the distributed profile needs ${name}")
    return value
