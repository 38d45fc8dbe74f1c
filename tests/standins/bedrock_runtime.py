"""A stand-in of the Bedrock Runtime ``InvokeModel`` API for Titan image embeddings and
Titan Image Generator v2 background removal.

Real boto3 reaches it through ``endpoint_url`` with dummy credentials: real HTTP, real
rest-json error parsing; the SigV4 ``Authorization`` header is only checked to be there.
botocore sends the model id percent-encoded in the path (``amazon.titan-embed-image-v1:0``
arrives as ``/model/amazon.titan-embed-image-v1%3A0/invoke``), so the route unquotes it.

The embedding is a fixed random projection of the grey image at 16 x 16 (plus a constant
so no image maps to zero), scaled so rows are *not* unit length: the same pixels always
give the same vector, similar pictures give similar vectors, and the client has to
normalise.

``amazon.titan-image-generator-v2:0`` serves ``{"taskType": "BACKGROUND_REMOVAL",
"backgroundRemovalParams": {"image": <base64>}}`` and answers ``{"images": [<base64 PNG>],
"error": null}``: the input's RGB with :func:`background_mask` as alpha (255 wherever a pixel
differs from the border's most common colour), scaled by ``cutout_scale``. Images over
``max_image_side`` px on a side get 400 ``ValidationException``, as Titan refuses them.
Other task types get 400.

Faults are configured per instance (attributes may be changed between calls) and apply to
both models:

* ``throttle_first``: the first K requests get 429 ``ThrottlingException``;
* ``quota``: ``(count, seconds)``, a 429 for a request beyond ``count`` in the trailing
  ``seconds`` (accepted requests only), like a provider enforcing its own limit;
* ``fail_requests``: request number (1-based, in arrival order) -> HTTP status, answered
  with that status's Bedrock error (500 InternalServerException, 503
  ServiceUnavailableException, 403 AccessDeniedException, ...);
* ``slow_requests``: request number -> seconds to wait before answering (read timeouts);
* ``latency``: seconds every request waits before it is answered (in addition);
* ``reject_image``: images it always refuses with 400 ``ValidationException``; by default
  those whose top-left pixel is pure magenta.

Every request is recorded with its ``time.monotonic()`` arrival for assertions;
``max_in_flight`` is the most requests it was answering at once.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

import numpy as np
from PIL import Image, UnidentifiedImageError

from tests.standins.pictures import background_mask, magenta_corner
from tests.standins.server import ServedStandIn, StandInServer

MODEL_PREFIX = "amazon.titan-embed-image-v1"
IMAGE_GENERATOR_PREFIX = "amazon.titan-image-generator-v2"
#: Titan Image Generator's largest side for background removal (AWS's model card).
MAX_IMAGE_SIDE = 1408
OUTPUT_LENGTHS = (256, 384, 1024)
_ROUTE = re.compile(r"/model/(?P<model>[^/]+)/invoke")
_ERROR_CODES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_REJECTED = "The provided image is not supported by this stand-in."


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    seq: int  # 1-based, arrival order
    arrived: float  # time.monotonic() when the request line was read
    path: str  # raw, as sent on the wire
    model_id: str  # unquoted
    status: int
    output_length: int | None
    signed: bool  # carried a SigV4 Authorization header
    task_type: str | None = None  # image generator requests
    image_size: tuple[int, int] | None = None  # the decoded input image, if it decoded


@dataclass
class BedrockRuntimeStandIn(ServedStandIn):
    thread_name = "bedrock-standin"

    throttle_first: int = 0
    quota: tuple[int, float] | None = None
    fail_requests: dict[int, int] = field(default_factory=dict)
    slow_requests: dict[int, float] = field(default_factory=dict)
    reject_image: Callable[[Image.Image], bool] = magenta_corner
    seed: int = 0
    latency: float = 0.0
    cutout_scale: float = 1.0
    max_image_side: int = MAX_IMAGE_SIDE
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._in_flight = 0
        self._accepted: list[float] = []
        self._stopping = threading.Event()
        self._projections: dict[int, np.ndarray] = {}

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return self.url

    def _stopping_now(self) -> None:
        self._stopping.set()  # wakes slow requests

    # -- behaviour -----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget recorded requests and numbering (faults stay as configured)."""
        with self._lock:
            self.requests.clear()
            self._accepted.clear()
            self._seq = 0
            self.max_in_flight = 0

    def embedding_for(self, img: Image.Image, length: int = 1024) -> np.ndarray:
        """The (unnormalised) vector this stand-in returns for ``img``."""
        grey = img.convert("L").resize((16, 16), Image.Resampling.BILINEAR)
        features = np.append(np.asarray(grey, dtype=np.float64).ravel() / 255.0, 1.0)
        with self._lock:
            matrix = self._projections.get(length)
            if matrix is None:
                rng = np.random.default_rng([self.seed, length])
                matrix = self._projections[length] = rng.standard_normal((features.size, length))
        return 3.0 * features @ matrix

    def arrivals(self) -> list[float]:
        with self._lock:
            return [r.arrived for r in self.requests]

    def _next(self) -> tuple[int, float]:
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self._seq, time.monotonic()

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _within_quota(self, now: float) -> bool:
        if self.quota is None:
            return True
        count, seconds = self.quota
        with self._lock:
            recent = [t for t in self._accepted if now - t < seconds]
            if len(recent) >= count:
                return False
            recent.append(now)
            self._accepted[:] = recent
            return True

    def _answer(
        self, seq: int, arrived: float, model_id: str, body: bytes
    ) -> tuple[int, dict, tuple[int, int] | None]:
        """Status, JSON body and decoded image size for one request (its body read)."""
        if seq <= self.throttle_first or not self._within_quota(arrived):
            return 429, {"message": "Too many requests, please wait before trying again."}, None
        if seq in self.fail_requests:
            status = self.fail_requests[seq]
            return status, {"message": f"stand-in fault {status} on request {seq}"}, None
        if model_id.startswith(IMAGE_GENERATOR_PREFIX):
            return self._remove_background(body)
        if not model_id.startswith(MODEL_PREFIX):
            return 400, {"message": "The provided model identifier is invalid."}, None
        try:
            request = json.loads(body)
            image_b64 = request["inputImage"]
            length = request.get("embeddingConfig", {}).get("outputEmbeddingLength", 1024)
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"message": "Malformed input request, please reformat your input."}, None
        if length not in OUTPUT_LENGTHS:
            message = f"outputEmbeddingLength {length!r} is not one of 256, 384, 1024"
            return 400, {"message": message}, None
        img = _decode(image_b64)
        if img is None:
            return 400, {"message": "Unable to process provided image."}, None
        if self.reject_image(img):
            return 400, {"message": _REJECTED}, img.size
        vector = self.embedding_for(img, length)
        return 200, {"embedding": vector.tolist(), "inputTextTokenCount": 0}, img.size

    def _remove_background(self, body: bytes) -> tuple[int, dict, tuple[int, int] | None]:
        try:
            request = json.loads(body)
            task_type = request["taskType"]
            if task_type != "BACKGROUND_REMOVAL":
                message = f"taskType {task_type!r} is not served by this stand-in"
                return 400, {"message": message}, None
            image_b64 = request["backgroundRemovalParams"]["image"]
        except (ValueError, KeyError, TypeError):
            return 400, {"message": "Malformed input request, please reformat your input."}, None
        img = _decode(image_b64)
        if img is None:
            return 400, {"message": "Unable to process provided image."}, None
        if max(img.size) > self.max_image_side:
            message = (
                f"Image dimensions {img.width}x{img.height} exceed the maximum of "
                f"{self.max_image_side} pixels per side."
            )
            return 400, {"message": message}, img.size
        if self.reject_image(img):
            return 400, {"message": _REJECTED}, img.size
        rgba = img.convert("RGB").convert("RGBA")
        rgba.putalpha(background_mask(img))
        if self.cutout_scale != 1.0:
            size = (
                max(1, round(img.width * self.cutout_scale)),
                max(1, round(img.height * self.cutout_scale)),
            )
            rgba = rgba.resize(size, Image.Resampling.NEAREST)
        out = io.BytesIO()
        rgba.save(out, format="PNG")
        return 200, {"images": [base64.b64encode(out.getvalue()).decode()], "error": None}, img.size


def _decode(image_b64: object) -> Image.Image | None:
    try:
        img = Image.open(io.BytesIO(base64.b64decode(image_b64, validate=True)))
        img.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, TypeError):
        return None
    return img


#: Dummy credentials the tests sign with: they must never show in reasons, stats or logs.
ACCESS_KEY_ID = "AKIASTANDINTESTKEY00"
SECRET = "stand-in-secret-key-7f3a9c1e-do-not-log"
SESSION_TOKEN = "stand-in-session-token-5b2d8e"


def client_settings(standin: BedrockRuntimeStandIn, **overrides: object) -> dict:
    """``from_settings`` arguments for a Bedrock client of ``standin``: a bucket that never
    waits and backoff of milliseconds, so retries are cheap."""
    return {
        "region": "us-east-1",
        "endpoint_url": standin.endpoint_url,
        "requests_per_minute": 60_000,
        "max_concurrency": 4,
        "max_attempts": 4,
        "timeout_seconds": 5.0,
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET,
        "aws_session_token": SESSION_TOKEN,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "headroom": 1.0,
    } | overrides


@contextmanager
def bedrock_runtime(**behaviour) -> Iterator[BedrockRuntimeStandIn]:
    """Run a stand-in for the duration of a ``with`` block."""
    with BedrockRuntimeStandIn(**behaviour) as standin:
        yield standin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
    timeout = 30  # a stuck client cannot hold a handler thread forever
    server: StandInServer

    def do_POST(self) -> None:
        standin = self.server.standin
        seq, arrived = standin._next()
        try:
            self._handle(standin, seq, arrived)
        finally:
            standin._done()

    def _handle(self, standin: BedrockRuntimeStandIn, seq: int, arrived: float) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        raw_path = self.path.split("?", 1)[0]
        match = _ROUTE.fullmatch(raw_path)
        model_id = urllib.parse.unquote(match["model"]) if match else ""
        image_size = None
        if match is None:
            status, payload = 404, {"message": f"no route for POST {raw_path}"}
        else:
            status, payload, image_size = standin._answer(seq, arrived, model_id, body)
        output_length = task_type = None
        with suppress(ValueError, KeyError, TypeError, AttributeError):
            request = json.loads(body)
            task_type = request.get("taskType")
            output_length = request["embeddingConfig"]["outputEmbeddingLength"]
        with standin._lock:
            standin.requests.append(
                Recorded(
                    seq=seq,
                    arrived=arrived,
                    path=raw_path,
                    model_id=model_id,
                    status=status,
                    output_length=output_length,
                    signed=self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"),
                    task_type=task_type,
                    image_size=image_size,
                )
            )
        delay = standin.slow_requests.get(seq, 0.0) + standin.latency
        if delay and standin._stopping.wait(delay):
            return
        self._send(status, payload)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", f"standin-{id(payload):x}")
            if status != HTTPStatus.OK:
                code = _ERROR_CODES.get(status, "InternalServerException")
                # Bedrock's form; botocore keeps the part before the colon.
                self.send_header(
                    "x-amzn-ErrorType",
                    f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                )
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read timeout); nothing to answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


BedrockRuntimeStandIn.handler = _Handler
