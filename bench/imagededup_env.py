"""imagededup's hashing methods in a venv of their own, and the worker the benchmark runs in it.

imagededup 0.3.x declares torch and torchvision as dependencies, and both
``imagededup/methods/__init__.py`` and ``imagededup/utils/__init__.py`` import them (the CNN
method, its models and a matplotlib plotter). Its hashing module needs none of that, so:

* ``bench/.venv-imagededup`` gets imagededup with ``--no-deps`` plus only what
  ``imagededup.methods.hashing`` imports: Pillow, numpy, scipy, PyWavelets, tqdm and
  scikit-learn (``handlers/search/retrieval.py`` imports its cosine similarity). Versions
  shared with the product come from ``constraints.txt``, so both sides decode with the same
  Pillow. The product's venv never carries imagededup, torch or torchvision.
* the worker registers empty ``imagededup.methods`` and ``imagededup.utils`` packages before
  importing ``imagededup.methods.hashing``, so their ``__init__`` files (the torch imports)
  never run.

Create (or refresh) the venv, about half a minute from the package index; the benchmark
also creates it on first use:

    .venv/bin/python bench/imagededup_env.py create

The benchmark calls :func:`run_worker`, which starts this file under that venv's Python
with a JSON request on stdin and reads a JSON answer on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-imagededup"
IMAGEDEDUP = "imagededup==0.3.3.post2"
#: What ``imagededup.methods.hashing`` imports; pinned by constraints.txt where shared.
HASHING_DEPS = ("pillow", "numpy", "scipy", "PyWavelets", "tqdm", "scikit-learn")
#: Pins for what constraints.txt does not list (it wins where it does).
EXTRA_PINS = {"scikit-learn": "1.9.1", "joblib": "1.6.0", "threadpoolctl": "3.8.0"}
METHODS = ("PHash", "DHash", "AHash", "WHash")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def create() -> None:
    """Make (or refresh) the venv with the same interpreter as the one running this."""
    import venv

    if not venv_python().exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    shared = (HERE.parent / "constraints.txt").read_text().splitlines()
    listed = {line.split("==")[0].strip().lower() for line in shared if "==" in line}
    extra = [f"{name}=={v}" for name, v in EXTRA_PINS.items() if name.lower() not in listed]
    constraints = VENV / "constraints.txt"
    constraints.write_text("\n".join([*shared, *extra]) + "\n")
    subprocess.run([*pip, "-c", str(constraints), *HASHING_DEPS], check=True)
    subprocess.run([*pip, "--no-deps", IMAGEDEDUP], check=True)
    check = [str(venv_python()), str(Path(__file__).resolve()), "check"]
    print(subprocess.run(check, check=True, capture_output=True, text=True).stdout.strip())


def run_worker(request: dict) -> dict:
    """Run one request in the imagededup venv; raises if the venv is missing or fails."""
    if not venv_python().exists():
        print(f"(creating {VENV.name} for imagededup: once, from the package index)", flush=True)
        create()
    proc = subprocess.run(
        [str(venv_python()), str(Path(__file__).resolve()), "worker"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"imagededup worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


# ---- everything below runs inside the imagededup venv -------------------------------------


def _hashing_module():
    """``imagededup.methods.hashing`` without running the package ``__init__`` files."""
    import importlib.util
    import logging
    import types

    spec = importlib.util.find_spec("imagededup")
    if spec is None or spec.origin is None:
        raise ImportError("imagededup is not installed in this interpreter")
    root = Path(spec.origin).parent
    for name in ("methods", "utils"):
        package = types.ModuleType(f"imagededup.{name}")
        package.__path__ = [str(root / name)]
        sys.modules[f"imagededup.{name}"] = package
    import imagededup.methods.hashing as hashing

    logging.getLogger("imagededup").setLevel(logging.ERROR)  # one warning per bad file
    if "torch" in sys.modules:
        raise AssertionError("torch was imported after all")
    return hashing


def _components(names: list[str], duplicates: dict[str, list[str]]) -> list[str]:
    """Connected components of imagededup's duplicate lists, as one group label a file."""
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for name, others in duplicates.items():
        for other in others:
            parent[find(name)] = find(other)
    return [find(n) for n in names]


def _encode(method, files: list[str]) -> dict[str, str]:
    return {f: method.encode_image(image_file=f) for f in files}


def _handle(request: dict) -> dict:
    hashing = _hashing_module()
    if request["op"] == "check":
        import imagededup

        return {"imagededup": imagededup.__version__, "torch_imported": "torch" in sys.modules}
    if request["op"] == "group":
        # Every method, every threshold: one encoding pass per method, many searches.
        out: dict = {}
        for name in request["methods"]:
            method = getattr(hashing, name)(verbose=False)
            files = request["files"]
            start = time.perf_counter()
            encodings = _encode(method, files)
            seconds = time.perf_counter() - start
            groups = {}
            for threshold in request["thresholds"]:
                dups = method.find_duplicates(
                    encoding_map=encodings,
                    max_distance_threshold=threshold,
                    num_dist_workers=0,  # in-process: the timing is single-core anyway
                )
                groups[str(threshold)] = _components(files, dups)
            out[name] = {"groups": groups, "encode_seconds": seconds}
        return out
    if request["op"] == "speed":
        method = getattr(hashing, request.get("method", "PHash"))(verbose=False)
        files = request["files"]
        _encode(method, files[:2])  # warm-up: imports, first-call caches
        best = float("inf")
        for _ in range(request.get("repeats", 1)):
            start = time.perf_counter()
            _encode(method, files)
            best = min(best, time.perf_counter() - start)
        return {"seconds": best, "images": len(files)}
    raise ValueError(f"unknown op {request['op']!r}")


def _main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "create":
        create()
    elif command == "check":
        print(json.dumps(_handle({"op": "check"})))
    elif command == "worker":
        json.dump(_handle(json.load(sys.stdin)), sys.stdout)
    else:
        sys.exit(f"usage: {sys.argv[0]} create | check | worker (JSON on stdin)")


if __name__ == "__main__":
    _main()
