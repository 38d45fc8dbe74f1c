"""Import hygiene: the image core must not drag in the orchestration stack."""

from __future__ import annotations

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
