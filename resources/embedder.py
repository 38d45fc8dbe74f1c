"""Embedder resource: one field picks the provider behind photogroup's Embedder interface.

* ``local`` (default): offline colour/gradient/layout descriptor, no weights.
* ``cnn``: EfficientNet-Lite0 ImageNet features (extra ``cnn``: torch CPU + weights package).
* ``onnx``: a user-supplied ONNX image encoder, local path or ``s3://`` (extra ``onnx``).
* ``bedrock``: Amazon Titan Multimodal Embeddings through ``bedrock-runtime``, rate-limited.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from photogroup.embed import Embedder, LocalEmbedder
from resources.run_settings import resolve
from resources.s3 import S3Resource

Provider = Literal["local", "cnn", "onnx", "bedrock"]


@dataclass(frozen=True)
class EmbedderSettings:
    """The settings a run uses: configured, else from the environment, else defaults."""

    provider: Provider
    onnx_model: str
    bedrock_region: str | None
    bedrock_endpoint_url: str | None


class EmbedderResource(dg.ConfigurableResource):
    """Turns working images into unit vectors."""

    #: field -> (variable read when the field is unset, type, default when both are unset)
    ENVIRONMENT: ClassVar[dict[str, tuple[str, Any, Any]]] = {
        "provider": ("EMBEDDER_PROVIDER", Provider, "local"),
        "onnx_model": ("EMBEDDER_ONNX_MODEL", str, ""),
        "bedrock_region": ("AWS_REGION", str, None),
        "bedrock_endpoint_url": ("BEDROCK_ENDPOINT_URL", str, None),
    }

    provider: str | None = Field(
        default=None,
        description="'local': offline descriptor; 'cnn': EfficientNet-Lite0; 'onnx': your "
        "ONNX encoder; 'bedrock': Amazon Titan Multimodal Embeddings. Unset: "
        "$EMBEDDER_PROVIDER when the run starts, else 'local'.",
    )
    batch_size: int = Field(default=64, description="Images per embed call.")
    threads: int = Field(
        default=1,
        description="CPU threads for cnn/onnx inference (1: steps of parallel runs share cores).",
    )
    cnn_batch_size: int = Field(
        default=4,
        description="cnn: network inputs per forward pass (larger was slower on a 2-core CPU).",
    )
    cnn_orientations: int = Field(
        default=2,
        description="cnn: average the embedding over 1 (as is), 2 (plus mirror) or 8 "
        "(all flips and quarter turns) orientations; more is invariant but slower.",
    )
    onnx_model: str | None = Field(
        default=None,
        description="onnx: local path or s3://bucket/key. Unset: $EMBEDDER_ONNX_MODEL when "
        "the run starts.",
    )
    onnx_cache_dir: str = Field(
        default=".local/models", description="onnx: where s3:// models are cached by ETag."
    )
    onnx_input_size: list[int] | None = Field(
        default=None, description="onnx: [width, height]; None reads it from the model."
    )
    onnx_resize: Literal["squash", "center_crop"] = Field(
        default="squash", description="onnx: resize to the input size, or crop its centre."
    )
    onnx_channel_order: Literal["RGB", "BGR"] = Field(
        default="RGB", description="onnx: channel order the model expects."
    )
    onnx_layout: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="onnx: channels first (NCHW) or last (NHWC)."
    )
    onnx_scale: float = Field(default=1 / 255, description="onnx: multiplier on 0-255 pixels.")
    onnx_mean: list[float] = Field(default=[0.485, 0.456, 0.406], description="onnx: mean.")
    onnx_std: list[float] = Field(default=[0.229, 0.224, 0.225], description="onnx: std.")
    onnx_trim_border: bool = Field(default=False, description="onnx: crop uniform padding.")
    onnx_output_name: str | None = Field(default=None, description="onnx: output tensor.")
    bedrock_region: str | None = Field(
        default=None,
        description="bedrock: AWS region. Unset: $AWS_REGION when the run starts, else "
        "boto3's default.",
    )
    bedrock_endpoint_url: str | None = Field(
        default=None,
        description="bedrock: endpoint override (VPC endpoint, a stand-in). Unset: "
        "$BEDROCK_ENDPOINT_URL when the run starts, else the region's.",
    )
    bedrock_output_length: int = Field(
        default=1024, description="bedrock: 256, 384 or 1024 dimensions."
    )
    bedrock_requests_per_minute: float = Field(
        default=100.0,
        description="bedrock: the account's InvokeModel quota per minute; the token bucket "
        "runs at 90 % of it (per run: divide by the runs that embed at once).",
    )
    bedrock_max_concurrency: int = Field(default=4, description="bedrock: requests in flight.")
    bedrock_max_attempts: int = Field(default=6, description="bedrock: tries per image.")
    bedrock_timeout_seconds: float = Field(default=30.0, description="bedrock: read timeout.")
    s3: dg.ResourceDependency[S3Resource]

    _embedder: Embedder | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.settings()  # a malformed variable fails the step that needs us, before work

    def settings(self) -> EmbedderSettings:
        """The settings in effect, reading the environment for those left unset."""
        return EmbedderSettings(**resolve(self, self.ENVIRONMENT))

    def get_embedder(self) -> Embedder:
        """The configured provider, built once per resource instance."""
        if self._embedder is None:
            self._embedder = self._build()
        return self._embedder

    def _build(self) -> Embedder:
        settings = self.settings()
        if settings.provider == "cnn":
            from photogroup.cnn_embedder import CnnEmbedder

            return CnnEmbedder(
                batch_size=self.cnn_batch_size,
                threads=self.threads,
                orientations=self.cnn_orientations,
            )
        if settings.provider == "onnx":
            return self._onnx(settings.onnx_model)
        if settings.provider == "bedrock":
            from resources.bedrock_embedder import BedrockEmbedder

            return BedrockEmbedder.from_settings(
                region=settings.bedrock_region,
                endpoint_url=settings.bedrock_endpoint_url,
                output_length=self.bedrock_output_length,
                requests_per_minute=self.bedrock_requests_per_minute,
                max_concurrency=self.bedrock_max_concurrency,
                max_attempts=self.bedrock_max_attempts,
                timeout_seconds=self.bedrock_timeout_seconds,
            )
        return LocalEmbedder()

    def _onnx(self, model: str) -> Embedder:
        from photogroup.onnx_embedder import OnnxEmbedder, Preprocessing
        from resources.model_files import resolve_model_file

        if not model:
            raise ValueError("provider 'onnx' needs $EMBEDDER_ONNX_MODEL (or onnx_model): a "
                             "local path or s3://bucket/key")  # fmt: skip
        path = resolve_model_file(model, self.s3.get_client(), Path(self.onnx_cache_dir))
        preprocessing = Preprocessing(
            size=tuple(self.onnx_input_size) if self.onnx_input_size else None,
            resize=self.onnx_resize,
            channel_order=self.onnx_channel_order,
            layout=self.onnx_layout,
            scale=self.onnx_scale,
            mean=tuple(self.onnx_mean),
            std=tuple(self.onnx_std),
            trim_border=self.onnx_trim_border,
            output_name=self.onnx_output_name,
        )
        return OnnxEmbedder(
            path,
            preprocessing,
            batch_size=self.batch_size,
            intra_op_num_threads=self.threads,
        )
