"""Background removal ("cut-outs") with Amazon Titan Image Generator v2 on Amazon Bedrock.

One ``InvokeModel`` request per image: ``{"taskType": "BACKGROUND_REMOVAL",
"backgroundRemovalParams": {"image": <base64 PNG>}}``, answered ``{"images": [<base64 PNG
with alpha>], "error": null}``; the mask is that PNG's alpha channel, resized (bilinear) to
the input's size when the model returns another.

Input limits (AWS's Titan Image Generator model card): at most 1,408 px on a side for
background removal (as for in/outpainting, image conditioning and colour palettes; image
variation allows 4,096) and 5 MB per input image. Larger images are downscaled (aspect kept)
before sending, and a PNG still over 5 MB is shrunk further, so the model sees fewer pixels
than the photo has; the mask is scaled back up. Whether Titan also has a *minimum* side for
this task is not documented where we looked: small images are sent as they are and a refusal
comes back as that image's ``ValidationException``.

Requests go through a client-side token bucket (run it below the account's "On-demand
InvokeModel requests per minute" quota for the model, which Service Quotas shows; the
default assumes 60) and at most ``max_concurrency`` are in flight. Retries and error mapping
are the shared Bedrock client's (resources/bedrock_client.py), which here also retries
``ModelTimeoutException``; an authorisation failure (access denied, bad or expired
credentials) also stops sending the rest, which would be refused the same way. Per-image
failures are returned in :class:`CutoutOutcome`, never raised; reasons are one line, with
anything credential-shaped redacted.
"""

import base64
import io
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from photogroup.providers import CutoutOutcome
from resources.bedrock_client import RETRYABLE_CODES, BedrockClient, model_slug
from resources.provider_client import Failed

log = logging.getLogger(__name__)

TITAN_IMAGE_GENERATOR_V2 = "amazon.titan-image-generator-v2:0"
#: Titan Image Generator's largest input side for background removal, in px.
MAX_SIDE = 1408
#: Titan Image Generator's largest input image, in bytes (of the decoded file).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: Assumed account quota when none is given; check Service Quotas for the real one.
DEFAULT_REQUESTS_PER_MINUTE = 60.0


def encode_image(img: Image.Image, max_side: int = MAX_SIDE) -> tuple[str, bool]:
    """Base64 PNG (lossless: the model sees our pixels) within Titan's limits, and whether
    it had to be downscaled for them."""
    img = img.convert("RGB")
    downscaled = False
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        downscaled = True
    while True:
        out = io.BytesIO()
        img.save(out, format="PNG")
        data = out.getvalue()
        if len(data) <= MAX_IMAGE_BYTES or min(img.size) <= 64:
            return base64.b64encode(data).decode("ascii"), downscaled
        # A noisy photo's PNG can pass 5 MB at 1,408 px; fewer pixels, still lossless.
        side = int(max(img.size) * 0.8)
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        downscaled = True


class BedrockCutouts(BedrockClient):
    """Titan Image Generator v2 background removal: one CutoutProvider (photogroup.providers)."""

    # The model is still producing when Bedrock gives up waiting (HTTP 408): worth another try.
    retry_codes = RETRYABLE_CODES | {"ModelTimeoutException"}
    stop_on_auth_failure = True
    default_read_timeout = 60.0  # background removal takes seconds
    counted = (
        "requests",
        "throttles",
        "retries",
        "images_succeeded",
        "images_failed",
        "images_downscaled",
        "outputs_resized",
    )

    def __init__(
        self,
        client: Any,
        requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE,
        max_concurrency: int = 4,
        max_attempts: int = 6,
        *,
        model: str = TITAN_IMAGE_GENERATOR_V2,
        max_side: int = MAX_SIDE,
        **kwargs: Any,
    ) -> None:
        """``kwargs`` go to BedrockClient (burst, headroom, limiter, backoff, sleep)."""
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 64:
            raise ValueError(f"max_side must be an integer >= 64, got {max_side!r}")
        super().__init__(
            client, model, requests_per_minute, max_concurrency, max_attempts, **kwargs
        )
        self.max_side = max_side
        # The side limit changes what the model sees, hence the masks.
        self.model_id = f"bedrock-{model_slug(model)}-background-removal-{max_side}"

    def __repr__(self) -> str:
        rate = getattr(self.limiter, "rate_per_minute", None)
        return (
            f"BedrockCutouts(model={self.model!r}, max_side={self.max_side}, "
            f"rate_per_minute={rate if rate is None else format(rate, 'g')}, "
            f"max_concurrency={self.max_concurrency})"
        )

    def cut_out(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        """One outcome per image, in order, ``max_concurrency`` requests at a time."""
        outcomes = self.each(self._cut_one, images, self.max_concurrency, "bedrock-cutout")
        for index, outcome in enumerate(outcomes):
            if outcome.error is not None:
                log.warning("Bedrock cut-out failed for image %d: %s", index, outcome.error)
        return outcomes

    def _cut_one(self, img: Image.Image) -> CutoutOutcome:
        started = time.monotonic()
        try:
            encoded, downscaled = encode_image(img, self.max_side)
        except Exception as exc:  # Pillow's decoders raise many types on a bad file
            return self._finish(
                started, error=self.clip(f"encode_error: {type(exc).__name__}: {exc}")
            )
        if downscaled:
            self._count("images_downscaled")
        body = json.dumps(
            {"taskType": "BACKGROUND_REMOVAL", "backgroundRemovalParams": {"image": encoded}}
        )

        def send() -> tuple[Image.Image, str | None]:
            payload, request_id = self.invoke(body)
            try:
                return self._mask(payload, img.size), request_id
            except Failed as failed:
                failed.request_id = request_id
                raise

        try:
            mask, request_id = self.call(send)
        except Failed as failed:
            return self._finish(started, error=failed.reason, request_id=failed.request_id)
        return self._finish(started, mask=mask, request_id=request_id)

    def _mask(self, payload: Any, size: tuple[int, int]) -> Image.Image:
        """The output's alpha channel at ``size``, or Failed."""
        if not isinstance(payload, dict):
            raise Failed("bad_response: expected a JSON object")
        if payload.get("error"):
            raise Failed(self.clip(f"model_error: {payload['error']}"))
        images = payload.get("images")
        if not isinstance(images, list) or not images or not isinstance(images[0], str):
            raise Failed("bad_response: no image in the response")
        try:
            data = base64.b64decode(images[0], validate=True)
        except ValueError as exc:
            raise Failed(self.clip(f"bad_output: {type(exc).__name__}: {exc}")) from None
        # Downscaled to fit the model's limits (or the model worked smaller): resized back.
        return self._alpha_mask(data, size)

    def _finish(
        self,
        started: float,
        mask: Image.Image | None = None,
        error: str | None = None,
        request_id: str | None = None,
    ) -> CutoutOutcome:
        self._count("images_succeeded" if mask is not None else "images_failed")
        return CutoutOutcome(mask, error, time.monotonic() - started, request_id)
