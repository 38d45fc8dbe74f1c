"""One ONNX model opened for CPU inference: the set-up the ONNX embedder and cut-outs share.

onnxruntime is the optional ``onnx`` extra (``pip install -e '.[onnx]'``), imported only when
a model is opened, so ``import photogroup`` stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from photogroup.providers import clip_reason

INSTALL_HINT = "pip install -e '.[onnx]'"

_FLOAT_INPUTS = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


class OnnxModelError(ValueError):
    """The model file cannot be used as configured (not ONNX, wrong shapes, bad output)."""


class OnnxProvider:
    """An ONNX model opened for CPU inference, as the ONNX embedder and cut-outs use it."""

    def _open(
        self,
        model_path: str | Path,
        preprocessing: Any,
        resolve_size: Callable[[Sequence[Any], Path], tuple[int, int]],
        batch_size: int,
        threads: int,
        free_image_dims: bool = False,
    ) -> tuple[Any, Any]:
        """Open the model with ``preprocessing``'s input and output (the first if unnamed),
        keep the preprocessing with the names and size (``resolve_size(input shape, path)``)
        it resolved, and return the input and output (onnxruntime NodeArgs).
        ``free_image_dims``: open a model exported at one fixed image size at the size the
        preprocessing asks for (see :func:`_free_image_dims`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if threads < 1:
            raise ValueError(f"intra_op_num_threads must be >= 1, not {threads}")
        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(f"ONNX model file not found: {path}")
        if not path.is_file():
            raise OnnxModelError(f"ONNX model path is not a file: {path}")
        self._session = _load_session(path, threads, free_image_dims)
        model_input = _pick(self._session.get_inputs(), preprocessing.input_name, "input", path)
        model_output = _pick(self._session.get_outputs(), preprocessing.output_name, "output", path)
        self._dtype = _input_dtype(model_input, path)
        self.model_path = path
        self.preprocessing = dataclasses.replace(
            preprocessing,
            size=resolve_size(model_input.shape, path),
            input_name=model_input.name,
            output_name=model_output.name,
        )
        self.input_name: str = model_input.name
        self.output_name: str = model_output.name
        batch_dim = model_input.shape[0]
        # A fixed batch dimension (often 1, from a traced export) is filled exactly, padding
        # the last chunk; a dynamic one takes ``batch_size`` images per run.
        self.fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) else None
        self.batch_size = self.fixed_batch or int(batch_size)
        self.intra_op_num_threads = int(threads)
        # Model ids follow the weights, not the path.
        self.model_sha256 = sha256_file(path)
        return model_input, model_output

    def _run_model(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The output for ``batch`` (padded to a fixed batch; the padding's rows are kept)
        and the run's wall seconds; OnnxModelError if onnxruntime refuses it."""
        if self.fixed_batch is not None and len(batch) < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - len(batch), *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        batch = np.ascontiguousarray(batch, dtype=self._dtype)
        started = time.monotonic()
        try:
            (out,) = self._session.run([self.output_name], {self.input_name: batch})
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise OnnxModelError(
                f"inference failed on input {list(batch.shape)}: {clip_reason(exc)}"
            ) from exc
        return np.asarray(out), time.monotonic() - started


def show(shape: Sequence[Any]) -> str:
    """A model shape for messages, ``?`` for unknown dims."""
    return "[" + ", ".join(str(v) if v is not None else "?" for v in shape) + "]"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            f"the 'onnx' providers need onnxruntime; install the extra: {INSTALL_HINT}"
        ) from exc
    return onnxruntime


def _free_image_dims(path: Path) -> bytes:
    """The model with the height and width of its first input and of its outputs made
    symbolic. A fully convolutional network traced at one size (U²-Net resizes its side
    outputs to the shape of a tensor, not to constants) then runs at any multiple of its
    stride; the file itself is not changed, so its SHA-256 still identifies the weights."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            f"running a model at another input size needs the onnx package: {INSTALL_HINT}"
        ) from exc
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError and friends from protobuf
        raise OnnxModelError(f"{path} is not a loadable ONNX model: {exc}") from exc
    for value in (model.graph.input[0], *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[2].dim_param, dims[3].dim_param = "height", "width"
    del model.graph.value_info[:]  # inferred intermediate shapes would pin the old size
    return model.SerializeToString()


def _load_session(path: Path, threads: int, free_image_dims: bool = False) -> Any:
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    # Bounded threads: the pipeline runs several steps at once on small machines.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle workers would otherwise spin between runs, burning cores other steps need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No pre-planned memory pattern: for U2-Net-p it held ~190 MB more per session at its
    # peak (544 -> 350 MB for one session, measured), and two sessions run at once.
    options.enable_mem_pattern = False
    model = _free_image_dims(path) if free_image_dims else str(path)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, Fail, ... from the C++ layer
        raise OnnxModelError(f"{path} is not a loadable ONNX model: {exc}") from exc


def _pick(args: Sequence[Any], name: str | None, kind: str, path: Path) -> Any:
    if not args:
        raise OnnxModelError(f"{path}: the model has no {kind}s")
    if name is None:
        return args[0]
    for arg in args:
        if arg.name == name:
            return arg
    available = ", ".join(repr(a.name) for a in args)
    raise OnnxModelError(f"{path}: no {kind} named {name!r}; the model has {available}")


def _input_dtype(model_input: Any, path: Path) -> type:
    dtype = _FLOAT_INPUTS.get(model_input.type)
    if dtype is None:
        raise OnnxModelError(
            f"{path}: input '{model_input.name}' is {model_input.type}; only float image "
            "tensors (float, float16, double) are supported"
        )
    return dtype


def sha256_file(path: Path) -> str:
    """A file's SHA-256, read in 1 MiB pieces (models are megabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
