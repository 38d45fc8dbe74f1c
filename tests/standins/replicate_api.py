"""A stand-in of Replicate's HTTP predictions API, for a background-removal model.

Routes (the subset a polling client needs, answered as Replicate does):

* ``POST /v1/predictions`` with ``{"version": ..., "input": {"image": "data:...;base64,..."}}``
  and ``Authorization: Bearer <token>``: 201 and the prediction (``status: "starting"``,
  ``urls.get``, ``urls.cancel``); 401 without the right token, 422 for an unknown version or
  an input image that is not a decodable data URL.
* ``GET /v1/predictions/<id>``: the prediction, ``starting`` for the first quarter of its
  latency, then ``processing``, then ``succeeded`` (``output`` is the result's URL) or
  ``failed`` (``error`` says why).
* ``POST /v1/predictions/<id>/cancel``: ``canceled`` unless it had already finished.
* ``GET /files/<id>.png``: the result, no token needed (like ``replicate.delivery``): an RGBA
  PNG the size of the input, its RGB the input's, its alpha :func:`mask_for` the input.

Each prediction takes a latency drawn uniformly from ``latency`` (seeded by ``seed`` and the
prediction's number, so a run's set of latencies is reproducible). Faults, per instance
(attributes may be changed between calls):

* ``create_limit_per_minute``: a create beyond this many *accepted* creates in the trailing
  minute gets 429 with ``retry-after`` (seconds until the oldest leaves the window);
* ``throttle_first``: the first K create requests get 429 (``retry-after``: one second);
* ``fail_requests``: request number (1-based, all routes, arrival order) -> 5xx status;
* ``drop_requests``: request numbers whose connection is closed without an answer;
* ``fail_image``: images whose predictions end ``failed``; by default those whose top-left
  pixel is pure magenta.

``time_scale`` multiplies every duration the stand-in applies: prediction latencies, the
60-second rate window and the ``retry-after`` values it sends (which are then fractional).
At ``time_scale=0.05`` a "2-10 s" prediction takes 0.1-0.5 s and "500 per minute" means
500 per 3 s, so the same schedule runs 20 x faster. A client must scale its own durations
(poll interval, backoff, timeouts, and its limiter's clock: :func:`scaled_limiter`) by the
same factor; divide the wall-clock results by ``time_scale`` to get real-time figures.

Every request is recorded with its ``time.monotonic()`` arrival for assertions.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from PIL import Image, UnidentifiedImageError

from photogroup.ratelimit import TokenBucket
from tests.standins.pictures import background_mask as mask_for
from tests.standins.pictures import magenta_corner
from tests.standins.server import ServedStandIn, StandInServer

#: The model version the stand-in serves; any other gets 422 like an unknown version.
VERSION = "fb8af171cfa1616ddcf1242c093f9c46bcada5ad4cf6f2fbe8b81b330ec5c003"
_PREDICTION = re.compile(r"/v1/predictions/(?P<id>[a-z0-9]+)")
_CANCEL = re.compile(r"/v1/predictions/(?P<id>[a-z0-9]+)/cancel")
_FILE = re.compile(r"/files/(?P<id>[a-z0-9]+)\.png")
_DATA_URL = re.compile(r"data:image/[a-z+.-]+;base64,(?P<data>.*)", re.DOTALL)


def cutout_png(img: Image.Image) -> bytes:
    """The stand-in's output file: the input's RGB with :func:`mask_for` as alpha."""
    rgba = img.convert("RGB").convert("RGBA")
    rgba.putalpha(mask_for(img))
    out = io.BytesIO()
    rgba.save(out, format="PNG")
    return out.getvalue()


def scaled_limiter(limit_per_minute: float, time_scale: float, headroom: float = 0.9):
    """``TokenBucket.for_limit`` running on the stand-in's scaled clock.

    Its minute is ``60 * time_scale`` wall seconds, so it is the same bucket (same burst,
    same rate per scaled minute) a client would use at real time; the seconds it reports
    waiting are scaled seconds.
    """
    return TokenBucket.for_limit(
        limit_per_minute,
        headroom=headroom,
        clock=lambda: time.monotonic() / time_scale,
        sleep=lambda seconds: time.sleep(seconds * time_scale),
    )


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    seq: int  # 1-based, arrival order, all routes
    arrived: float  # time.monotonic() when the request line was read
    method: str
    path: str
    kind: str  # "create", "get", "cancel", "file" or "other"
    status: int  # 0: connection dropped without an answer
    authorized: bool  # carried the right bearer token
    retry_after: float | None = None  # seconds sent with a 429


@dataclass
class _Prediction:
    id: str
    number: int
    created: float
    latency: float  # wall seconds, time_scale applied
    body: dict
    fails: bool
    result: bytes  # the output PNG, made at create (the "model" runs during the latency)
    canceled: float | None = None

    def status(self, now: float) -> str:
        done = self.created + self.latency
        if self.canceled is not None and self.canceled < done:
            return "canceled"
        if now < self.created + 0.25 * self.latency:
            return "starting"
        if now < done:
            return "processing"
        return "failed" if self.fails else "succeeded"


@dataclass
class ReplicateStandIn(ServedStandIn):
    thread_name = "replicate-standin"

    token: str = "r8_standin_token"
    create_limit_per_minute: int | None = None
    throttle_first: int = 0
    fail_requests: dict[int, int] = field(default_factory=dict)
    drop_requests: set[int] = field(default_factory=set)
    fail_image: Callable[[Image.Image], bool] = magenta_corner
    latency: tuple[float, float] = (2.0, 10.0)  # seconds, before time_scale
    time_scale: float = 1.0
    seed: int = 0
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale!r}")
        self._lock = threading.Lock()
        self._seq = 0
        self._creates = 0
        self._accepted: deque[float] = deque()
        self._predictions: dict[str, _Prediction] = {}

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.url

    # -- inspection ----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget recorded requests, numbering and the rate window (faults stay)."""
        with self._lock:
            self.requests.clear()
            self._accepted.clear()
            self._seq = 0
            self._creates = 0

    def recorded(self, kind: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if kind is None or r.kind == kind]

    @property
    def window(self) -> float:
        """Wall seconds of the provider's "per minute" at this time_scale."""
        return 60.0 * self.time_scale

    # -- behaviour -----------------------------------------------------------------------

    def _next(self) -> tuple[int, float]:
        with self._lock:
            self._seq += 1
            return self._seq, time.monotonic()

    def _retry_after_text(self, seconds: float) -> str:
        # HTTP's integer seconds at real time; scaled runs need fractions to mean anything.
        if self.time_scale == 1.0:
            return str(max(1, math.ceil(seconds)))
        return f"{max(seconds, 0.001):.3f}"

    def _admit_create(self, now: float) -> float | None:
        """None if this create may proceed, else the retry-after seconds for its 429."""
        with self._lock:
            self._creates += 1
            if self._creates <= self.throttle_first:
                return 1.0 * self.time_scale
            limit = self.create_limit_per_minute
            if limit is None:
                return None
            while self._accepted and now - self._accepted[0] >= self.window:
                self._accepted.popleft()
            if len(self._accepted) >= limit:
                return self._accepted[0] + self.window - now
            return None

    def _create(self, now: float, body: bytes) -> tuple[int, dict]:
        try:
            request = json.loads(body)
            version = request["version"]
            image_url = request["input"]["image"]
        except (ValueError, KeyError, TypeError):
            return 422, _problem(422, "Unprocessable Entity", "- input.image: Required")
        if version != VERSION:
            return 422, _problem(422, "Invalid version", "Invalid version or not permitted")
        match = _DATA_URL.fullmatch(image_url) if isinstance(image_url, str) else None
        try:
            if match is None:
                raise ValueError("not a data URL")
            img = Image.open(io.BytesIO(base64.b64decode(match["data"], validate=True)))
            img.load()
        except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
            return 422, _problem(422, "Invalid input", "- input.image: Does not match format 'uri'")
        fails = self.fail_image(img)
        result = b"" if fails else cutout_png(img)
        with self._lock:
            # Accepted: counts against the window (a 429'd create does not, as at Replicate).
            self._accepted.append(now)
            number = len(self._predictions) + 1
            rng = random.Random(f"{self.seed}:{number}")
            prediction_id = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz234567", k=26))
            low, high = self.latency
            prediction = _Prediction(
                id=prediction_id,
                number=number,
                created=now,
                latency=rng.uniform(low, high) * self.time_scale,
                body={"version": version, "input": request["input"]},
                fails=fails,
                result=result,
            )
            self._predictions[prediction_id] = prediction
        return 201, self._view(prediction, now)

    def _view(self, p: _Prediction, now: float) -> dict:
        status = p.status(now)
        base = self.base_url
        body = {
            "id": p.id,
            "model": "standin/remove-bg",
            "version": p.body["version"],
            "input": p.body["input"],
            "logs": "",
            "output": None,
            "error": None,
            "status": status,
            "urls": {
                "get": f"{base}/v1/predictions/{p.id}",
                "cancel": f"{base}/v1/predictions/{p.id}/cancel",
            },
        }
        if status == "succeeded":
            body["output"] = f"{base}/files/{p.id}.png"
            body["metrics"] = {"predict_time": round(p.latency / self.time_scale, 3)}
        elif status == "failed":
            body["error"] = "The model could not find a subject in this image (stand-in rule)"
        return body

    def _answer(
        self, kind: str, path: str, body: bytes, seq: int, now: float, auth: bool
    ) -> tuple[int, dict | bytes, float | None]:
        """(status, payload, retry_after); payload is a dict (JSON) or bytes (PNG)."""
        if seq in self.fail_requests:
            status = self.fail_requests[seq]
            return status, _problem(status, "Server error", f"stand-in fault {status}"), None
        if kind == "other":
            return 404, _problem(404, "Not found", f"no route for {path}"), None
        if kind != "file" and not auth:
            detail = "You did not pass a valid authentication token"
            return 401, _problem(401, "Unauthenticated", detail), None
        if kind == "create":
            wait = self._admit_create(now)
            if wait is not None:
                detail = "Request was throttled. Expected available in a moment."
                return 429, _problem(429, "Request was throttled", detail), wait
            status, payload = self._create(now, body)
            return status, payload, None
        prediction_id = re.search(r"/(?:predictions|files)/([a-z0-9]+)", path)[1]
        with self._lock:
            prediction = self._predictions.get(prediction_id)
        if prediction is None:
            return 404, _problem(404, "Not found", "Not found."), None
        if kind == "cancel":
            with self._lock:
                if prediction.status(now) in ("starting", "processing"):
                    prediction.canceled = now
            return 200, self._view(prediction, now), None
        if kind == "get":
            return 200, self._view(prediction, now), None
        if prediction.status(now) != "succeeded":
            return 404, _problem(404, "Not found", "Not found."), None
        return 200, prediction.result, None


def _kind(method: str, path: str) -> str:
    if method == "POST" and path == "/v1/predictions":
        return "create"
    if method == "POST" and _CANCEL.fullmatch(path):
        return "cancel"
    if method == "GET" and _PREDICTION.fullmatch(path):
        return "get"
    if method == "GET" and _FILE.fullmatch(path):
        return "file"
    return "other"


def _problem(status: int, title: str, detail: str) -> dict:
    return {"title": title, "detail": detail, "status": status}


@contextmanager
def replicate_api(**behaviour) -> Iterator[ReplicateStandIn]:
    """Run a stand-in for the duration of a ``with`` block."""
    with ReplicateStandIn(**behaviour) as standin:
        yield standin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' pool expects
    timeout = 30  # a stuck client cannot hold a handler thread forever
    # Headers and body go out in two writes: with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a response).
    disable_nagle_algorithm = True
    server: StandInServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        standin = self.server.standin
        seq, arrived = standin._next()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        auth = self.headers.get("Authorization", "") == f"Bearer {standin.token}"
        kind = _kind(method, path)
        if seq in standin.drop_requests:
            status, payload, retry_after = 0, b"", None
        else:
            status, payload, retry_after = standin._answer(kind, path, body, seq, arrived, auth)
        with standin._lock:
            standin.requests.append(
                Recorded(seq, arrived, method, path, kind, status, auth, retry_after)
            )
        if status == 0:
            self.close_connection = True  # the client sees the connection reset
            return
        if isinstance(payload, bytes):
            data, content_type = payload, "image/png"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("retry-after", standin._retry_after_text(retry_after))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up; nothing to answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


ReplicateStandIn.handler = _Handler
