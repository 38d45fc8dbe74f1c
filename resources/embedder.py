"""Embedder resource: one field picks the provider behind photogroup's Embedder interface.

* ``local`` (default): offline colour/gradient/layout descriptor, no weights.
* ``cnn``: EfficientNet-Lite0 ImageNet features (extra ``cnn``: torch CPU + weights package).
* ``onnx``: a user-supplied ONNX image encoder, local path or ``s3://`` (extra ``onnx``).
* ``bedrock``: Amazon Titan Multimodal Embeddings through ``bedrock-runtime``, rate-limited.
"""

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, PrivateAttr

from photogroup.embed import Embedder, LocalEmbedder
from resources.provider_resource import ProviderResource, ProviderSettings

Provider = Literal["local", "cnn", "onnx", "bedrock"]


@dataclass(frozen=True)
class EmbedderSettings(ProviderSettings):
    """The settings a run uses: configured, else from the environment, else defaults."""

    provider: Provider


class EmbedderResource(ProviderResource):
    """Turns working images into unit vectors."""

    ENVIRONMENT = ProviderResource.ENVIRONMENT | {
        "provider": ("EMBEDDER_PROVIDER", Provider, "local"),
        "onnx_model": ("EMBEDDER_ONNX_MODEL", str, ""),
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
    bedrock_output_length: int = Field(
        default=1024, description="bedrock: 256, 384 or 1024 dimensions."
    )
    bedrock_requests_per_minute: float = Field(
        default=100.0,
        description="bedrock: the account's InvokeModel quota per minute; the token bucket "
        "runs at 90 % of it (per run: divide by the runs that embed at once).",
    )
    bedrock_timeout_seconds: float = Field(default=30.0, description="bedrock: read timeout.")

    _embedder: Embedder | None = PrivateAttr(default=None)

    def settings(self) -> EmbedderSettings:
        """The settings in effect, reading the environment for those left unset."""
        return EmbedderSettings(**self._resolved())

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

            return self._bedrock(
                BedrockEmbedder,
                settings,
                output_length=self.bedrock_output_length,
                requests_per_minute=self.bedrock_requests_per_minute,
                timeout_seconds=self.bedrock_timeout_seconds,
            )
        return LocalEmbedder()

    def _onnx(self, model: str) -> Embedder:
        from photogroup.onnx_embedder import OnnxEmbedder, Preprocessing

        path = self._model_file(model)
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
