"""Configuration is read when a run starts: importing the code location reads no
environment, and a malformed variable fails the run (naming it), not the load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.definitions import defs
from resources.cutouts import CutoutResource
from resources.embedder import EmbedderResource
from resources.run_settings import SettingError

REPO = Path(__file__).resolve().parent.parent

#: Every variable the definitions, resources and executor read at run time.
VARIABLES = (
    "CUTOUT_PROVIDER", "CUTOUT_REQUESTS_PER_MINUTE", "REPLICATE_MODEL_VERSION",
    "REPLICATE_BASE_URL", "CUTOUT_ONNX_MODEL", "CUTOUT_U2NETP_MODEL", "EMBEDDER_PROVIDER",
    "EMBEDDER_ONNX_MODEL", "AWS_REGION", "BEDROCK_ENDPOINT_URL", "PIPELINE_PROFILE",
    "CELERY_VISIBILITY_TIMEOUT", "S3_ENDPOINT_URL", "UPLOADS_BUCKET", "PIPELINE_BUCKET",
)  # fmt: skip

# Runs in a fresh interpreter: os.environ's class records every read whose caller is a file
# of this repository (not of the virtualenv); then the definitions are imported and loaded,
# then every other module of the project is imported.
RECORDING_IMPORT = """
import json, os, sys
repo, venv = sys.argv[1], sys.prefix
PACKAGES = ("photogroup", "resources", "assets", "sensors", "orchestration", "review")
reads = []
# os.getenv and Mapping.get call __getitem__ from here (frozen modules in Python 3.11+).
OS_FILES = ("/os.py", "/_collections_abc.py", "<frozen os>", "<frozen _collections_abc>")

class Recording(type(os.environ)):
    def __getitem__(self, key):
        frame = sys._getframe(1)
        while frame and frame.f_code.co_filename.endswith(OS_FILES):
            frame = frame.f_back
        where = frame.f_code.co_filename if frame else ""
        if where.startswith(repo) and not where.startswith(venv):
            reads.append(f"{where[len(repo) + 1:]}:{frame.f_lineno} {key}")
        return super().__getitem__(key)

os.environ.__class__ = Recording
import importlib, pkgutil
from orchestration.definitions import defs
defs.resolve_job_def("image_pipeline_job")
defs.resolve_asset_graph()
for package in PACKAGES:  # and every other module of the project (__main__ runs the CLI)
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(json.dumps(reads))
"""


def test_definitions_module_names_no_environment_variable_reads():
    source = (REPO / "orchestration" / "definitions.py").read_text()
    assert "os.environ" not in source and "getenv" not in source


def test_importing_the_definitions_and_every_module_reads_no_environment():
    result = subprocess.run(
        [sys.executable, "-c", RECORDING_IMPORT, str(REPO)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_recorder_sees_a_project_module_that_reads_at_import(tmp_path):
    # The check above can fail: a module of the repo reading os.environ at import is named.
    probe = REPO / "orchestration" / f"_probe_{tmp_path.name}.py"
    probe.write_text('import os\nVALUE = os.environ.get("CUTOUT_PROVIDER")\n')
    code = RECORDING_IMPORT.replace(
        "from orchestration.definitions import defs",
        f"import orchestration.{probe.stem}\nfrom orchestration.definitions import defs",
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, str(REPO)],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        f"orchestration/{probe.name}:2 CUTOUT_PROVIDER"
    ]


def test_the_code_location_loads_with_garbage_in_every_variable():
    env = {"PATH": "/usr/bin:/bin", **{name: "abc;garbage" for name in VARIABLES}}
    code = (
        "from orchestration.definitions import defs\n"
        "job = defs.resolve_job_def('image_pipeline_job')\n"
        "print(job.executor_def.name, len(defs.resolve_asset_graph().get_all_asset_keys()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["pipeline", "11"]


def test_a_malformed_quota_fails_the_run_naming_the_variable(monkeypatch):
    for name, value in {"S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                        "UPLOADS_BUCKET": "u-bucket", "PIPELINE_BUCKET": "p-bucket",
                        "CUTOUT_REQUESTS_PER_MINUTE": "abc"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    job = defs.resolve_job_def("image_pipeline_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("upload_batches", ["shop/b1"])
        result = job.execute_in_process(
            partition_key="shop/b1", instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey("product_cutouts")],
        )  # fmt: skip
    assert not result.success
    messages = []
    for event in result.all_events:  # resource init failures are engine events with an error
        error = getattr(event.event_specific_data, "error", None)
        while error:
            messages.append(error.message)
            error = error.cause
    assert any("$CUTOUT_REQUESTS_PER_MINUTE='abc'" in m for m in messages), messages


def test_configured_values_win_then_variables_then_defaults(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert CutoutResource(s3=None).settings().provider == "u2netp"
    assert CutoutResource(s3=None).settings().requests_per_minute == 500.0
    monkeypatch.setenv("CUTOUT_PROVIDER", "bedrock")
    monkeypatch.setenv("CUTOUT_REQUESTS_PER_MINUTE", " 120 ")
    monkeypatch.setenv("EMBEDDER_PROVIDER", "onnx")
    settings = CutoutResource(s3=None).settings()
    assert (settings.provider, settings.requests_per_minute) == ("bedrock", 120.0)
    assert EmbedderResource(s3=None).settings().provider == "onnx"
    configured = CutoutResource(provider="replicate", requests_per_minute=60, s3=None)
    assert (configured.settings().provider, configured.settings().requests_per_minute) == (
        "replicate",
        60.0,
    )
    monkeypatch.setenv("EMBEDDER_PROVIDER", "resnet")
    with pytest.raises(SettingError, match=r"\$EMBEDDER_PROVIDER='resnet'"):
        EmbedderResource(s3=None).settings()
    with pytest.raises(SettingError, match=r"CutoutResource\.provider='gpu'"):
        CutoutResource(provider="gpu", s3=None).settings()


def _executor(config: dict, instance: dg.DagsterInstance) -> dg.Executor:
    """The executor a run of the pipeline job would get (its creation, at run launch)."""
    job = defs.resolve_job_def("image_pipeline_job")
    full = {"profile": None, "max_concurrent": None, "retries": {"enabled": {}}, **config}
    context = dg.InitExecutorContext(job=dg.reconstructable(_pipeline_job),
                                     executor_def=job.executor_def, executor_config=full,
                                     instance=instance)  # fmt: skip
    return job.executor_def.executor_creation_fn(context)  # type: ignore[misc]


def _pipeline_job() -> dg.JobDefinition:
    return defs.resolve_job_def("image_pipeline_job")


def test_the_executor_profile_is_launchpad_config_read_at_run_launch(monkeypatch):
    from dagster._core.executor.multiprocess import MultiprocessExecutor
    from dagster_celery.executor import CeleryExecutor

    fields = _pipeline_job().executor_def.config_schema.config_type.fields
    assert "PIPELINE_PROFILE" in fields["profile"].description
    monkeypatch.delenv("PIPELINE_PROFILE", raising=False)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:1/1")
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "90")
    with dg.instance_for_test() as instance:
        local = _executor({"max_concurrent": 3}, instance)
        assert isinstance(local, MultiprocessExecutor) and local._max_concurrent == 3
        monkeypatch.setenv("PIPELINE_PROFILE", "distributed")
        celery = _executor({}, instance)
        assert isinstance(celery, CeleryExecutor) and celery.broker == "redis://127.0.0.1:1/0"
        transport = celery.config_source.broker_transport_options
        assert transport["visibility_timeout"] == 90
        # The launchpad's choice wins over the variable.
        assert isinstance(_executor({"profile": "local"}, instance), MultiprocessExecutor)
        monkeypatch.setenv("PIPELINE_PROFILE", "cluster")
        with pytest.raises(SettingError, match="PIPELINE_PROFILE='cluster'"):
            _executor({}, instance)
        monkeypatch.setenv("PIPELINE_PROFILE", "distributed")
        monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "an hour")
        with pytest.raises(SettingError, match=r"\$CELERY_VISIBILITY_TIMEOUT='an hour'"):
            _executor({}, instance)


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1", "83 33"])
def test_a_malformed_local_s3_port_names_the_variable(value):
    from orchestration.local_s3 import first_port

    with pytest.raises(ValueError, match="LOCAL_S3_PORT"):
        first_port(value)


def test_local_s3_port_defaults_to_8333_and_takes_a_valid_port():
    from orchestration.local_s3 import DEFAULT_S3_PORT, first_port

    assert first_port(None) == first_port("") == DEFAULT_S3_PORT == 8333
    assert first_port("18333") == 18333
