"""Import hygiene: the image core must not drag in the orchestration stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import photogroup

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_photogroup_imports_without_dagster_or_boto3():
    code = "import photogroup, sys; print('dagster' in sys.modules, 'boto3' in sys.modules)"
    assert run_python(code) == "False False"


#: What the I/O-free core must never pull in: the orchestration stack and network clients.
BLOCKED = ("dagster", "boto3", "botocore", "requests")

# A fresh interpreter where importing a blocked package (or any of its submodules) raises
# ImportError; each core module is imported in turn and every failure is printed as JSON.
_PURE_CORE_CHECK = """
import importlib, json, pkgutil, sys, traceback
import photogroup

BLOCKED = set(sys.argv[1].split(","))


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked in the pure core: {name}")
        return None


sys.meta_path.insert(0, Block())
failures = {}
modules = sorted(m.name for m in pkgutil.iter_modules(photogroup.__path__, "photogroup."))
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"modules": modules, "failures": failures}))
"""


def test_every_core_module_imports_with_io_stacks_blocked():
    result = subprocess.run(
        [sys.executable, "-c", _PURE_CORE_CHECK, ",".join(BLOCKED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    on_disk = sorted(f"photogroup.{p.stem}" for p in (REPO / "photogroup").glob("*.py"))
    on_disk.remove("photogroup.__init__")
    assert report["modules"] == on_disk  # every module was tried, none skipped
    assert report["failures"] == {}, "core modules that import " + "/".join(BLOCKED)


def test_the_blocker_names_a_module_that_pulls_in_a_blocked_package(tmp_path):
    # The check above must fail, naming the module, when a core module imports requests.
    package = tmp_path / "photogroup"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pure.py").write_text("import json\n")
    (package / "leaky.py").write_text("import requests\n")
    result = subprocess.run(
        [sys.executable, "-c", _PURE_CORE_CHECK, ",".join(BLOCKED)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] == ["photogroup.leaky", "photogroup.pure"]
    assert list(report["failures"]) == ["photogroup.leaky"]
    assert "blocked in the pure core: requests" in report["failures"]["photogroup.leaky"]


def test_every_core_module_imports_without_dagster_boto3_or_skimage():
    modules = ["decode", "features", "embed", "cluster", "evaluate", "manifest", "variants"]
    code = (
        "import sys\n"
        + "".join(f"import photogroup.{m}\n" for m in [*modules, "samples"])
        + "print(sorted(m for m in ('dagster', 'boto3', 'skimage') if m in sys.modules))"
    )
    assert run_python(code) == "[]"


def test_public_api_is_complete():
    for name in photogroup.__all__:
        assert hasattr(photogroup, name), name


def test_importing_photogroup_does_not_import_torch():
    # torch is the optional `cnn` extra: only CnnEmbedder.embed imports it.
    code = "import photogroup, photogroup.cnn_embedder, sys; print('torch' in sys.modules)"
    assert run_python(code) == "False"
