"""Cut-out resource: one field picks the background-removal provider.

* ``u2netp`` (default, offline): the U²-Net-p salient-object model through onnxruntime
  (photogroup.u2netp), its file checked against the pinned SHA-256.
* ``local`` (offline): GrabCut seeded from the border (photogroup.cutout).
* ``replicate``: a Replicate model through the asynchronous predictions API (create all,
  then poll all); token from the environment variable named by ``replicate_token_env``.
* ``bedrock``: Amazon Titan Image Generator v2 ``BACKGROUND_REMOVAL``.
* ``onnx``: your U²-Net-style salient-object model, local path or ``s3://``.

Remote providers take their tokens from a bucket shared by every run (state on the pipeline
bucket, ``limits/<provider>.json``, see resources/shared_ratelimit.py), served round-robin
across tenants, so parallel runs together stay under the account's quota.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from photogroup.providers import CutoutProvider
from resources.provider_resource import ProviderResource, ProviderSettings

Provider = Literal["u2netp", "local", "replicate", "bedrock", "onnx"]


@dataclass(frozen=True)
class CutoutSettings(ProviderSettings):
    """The settings a run uses: configured, else from the environment, else defaults."""

    provider: Provider
    requests_per_minute: float
    replicate_version: str
    replicate_base_url: str
    u2netp_model: str


class CutoutResource(ProviderResource):
    """Turns product photos into foreground masks."""

    ENVIRONMENT = ProviderResource.ENVIRONMENT | {
        "provider": ("CUTOUT_PROVIDER", Provider, "u2netp"),
        "requests_per_minute": ("CUTOUT_REQUESTS_PER_MINUTE", float, 500.0),
        "replicate_version": ("REPLICATE_MODEL_VERSION", str, ""),
        "replicate_base_url": ("REPLICATE_BASE_URL", str, "https://api.replicate.com"),
        "onnx_model": ("CUTOUT_ONNX_MODEL", str, ""),
        "u2netp_model": ("CUTOUT_U2NETP_MODEL", str, ""),
    }

    provider: str | None = Field(
        default=None,
        description="'u2netp' (offline model), 'local' (offline GrabCut), 'replicate', "
        "'bedrock' or 'onnx' (your model). Unset: $CUTOUT_PROVIDER when the run starts, "
        "else 'u2netp'.",
    )
    requests_per_minute: float | None = Field(
        default=None,
        description="replicate/bedrock: the account's quota; all runs together use 90 % of "
        "it. Unset: $CUTOUT_REQUESTS_PER_MINUTE when the run starts, else 500.",
    )
    shared_limiter: bool = Field(
        default=True,
        description="Share the quota across runs through limits/<provider>.json on "
        "limits_bucket; off, each run paces itself alone.",
    )
    limits_bucket: str = Field(default="", description="Bucket of the shared limiter state.")
    replicate_version: str | None = Field(
        default=None,
        description="replicate: model version id. Unset: $REPLICATE_MODEL_VERSION when the "
        "run starts.",
    )
    replicate_base_url: str | None = Field(
        default=None,
        description="replicate: API origin; the token is sent to this origin only. Unset: "
        "$REPLICATE_BASE_URL when the run starts, else https://api.replicate.com.",
    )
    replicate_token_env: str = Field(
        default="REPLICATE_API_TOKEN",
        description="replicate: name of the environment variable holding the API token "
        "(the token itself is never part of the config).",
    )
    replicate_create_concurrency: int = Field(
        default=4, description="replicate: create requests in flight (phase 1)."
    )
    replicate_poll_concurrency: int = Field(
        default=8, description="replicate: poll and download requests in flight (phase 2)."
    )
    replicate_poll_interval: float = Field(
        default=1.0, description="replicate: seconds between two polls of one prediction."
    )
    replicate_prediction_timeout: float = Field(
        default=300.0,
        description="replicate: seconds a prediction may run before it is cancelled.",
    )
    onnx_model: str | None = Field(
        default=None,
        description="onnx: local path or s3://bucket/key. Unset: $CUTOUT_ONNX_MODEL when the "
        "run starts.",
    )
    onnx_input_size: int = Field(default=0, description="onnx: side; 0 reads the model's.")
    u2netp_model: str | None = Field(
        default=None,
        description="u2netp: the model file, a local path or s3://bucket/key (cached in "
        "onnx_cache_dir). Unset: $CUTOUT_U2NETP_MODEL when the run starts, else "
        ".local/models/u2netp.onnx in the repository, where the set-up puts it. Its "
        "SHA-256 is checked either way.",
    )
    threads: int = Field(default=0, description="local/onnx/u2netp: CPU threads (0: all cores).")

    def settings(self) -> CutoutSettings:
        """The settings in effect, reading the environment for those left unset."""
        return CutoutSettings(**self._resolved())

    @property
    def in_process(self) -> bool:
        """Whether the provider computes in this process (no remote quota, no polling)."""
        return self.settings().provider in ("u2netp", "local", "onnx")

    def get_provider(self, tenant: str) -> CutoutProvider:
        """A provider for one run of ``tenant``'s batch (its limiter knows the tenant)."""
        settings = self.settings()
        if settings.provider == "local":
            from photogroup.cutout_providers import LocalCutouts

            return LocalCutouts(threads=self.threads or None)
        if settings.provider == "u2netp":
            return self._u2netp(settings.u2netp_model)
        if settings.provider == "onnx":
            return self._onnx(settings.onnx_model)
        limiter = self._limiter(tenant, settings)
        if settings.provider == "replicate":
            from resources.replicate_cutouts import ReplicateCutouts

            # Read when the run starts and held as a SecretStr: never part of the config.
            token = SecretStr(os.environ.get(self.replicate_token_env, ""))
            if not token.get_secret_value().strip():
                raise ValueError(f"provider 'replicate' needs ${self.replicate_token_env}")
            if not settings.replicate_version:
                raise ValueError("provider 'replicate' needs $REPLICATE_MODEL_VERSION")
            return ReplicateCutouts(
                token,
                settings.replicate_version,
                base_url=settings.replicate_base_url,
                limiter=limiter,
                create_concurrency=self.replicate_create_concurrency,
                poll_concurrency=self.replicate_poll_concurrency,
                poll_interval=self.replicate_poll_interval,
                prediction_timeout=self.replicate_prediction_timeout,
            )
        from resources.bedrock_cutouts import BedrockCutouts

        return self._bedrock(
            BedrockCutouts,
            settings,
            requests_per_minute=settings.requests_per_minute,
            limiter=limiter,
        )

    def _limiter(self, tenant: str, settings: CutoutSettings):
        from photogroup.ratelimit import TokenBucket

        if not self.shared_limiter:
            return TokenBucket.for_limit(settings.requests_per_minute)
        from resources.shared_ratelimit import SharedTokenBucket

        if not self.limits_bucket:
            raise ValueError("shared_limiter needs limits_bucket (the pipeline bucket)")
        return SharedTokenBucket.for_limit(
            settings.requests_per_minute,
            client=self.s3.get_client(),
            bucket=self.limits_bucket,
            key=f"limits/{settings.provider}.json",
            tenant=tenant,
        )

    def _u2netp(self, model: str) -> CutoutProvider:
        from photogroup.u2netp import DEFAULT_MODEL_PATH, U2netpCutouts

        path: Path = Path(model) if model else DEFAULT_MODEL_PATH
        if model.startswith("s3://"):
            path = self._model_file(model)
        # A local path is checked by U2netpCutouts: missing or not the pinned file, the
        # error names the SHA-256 expected and the command that fetches it.
        # One single-threaded model run per core at a time (see U2netpCutouts).
        return U2netpCutouts(path, workers=self.threads or os.cpu_count() or 1)

    def _onnx(self, model: str) -> CutoutProvider:
        from photogroup.onnx_cutouts import OnnxCutouts, SaliencyPreprocessing

        path = self._model_file(model)
        size = (self.onnx_input_size, self.onnx_input_size) if self.onnx_input_size else None
        return OnnxCutouts(
            path, SaliencyPreprocessing(size=size), intra_op_num_threads=self.threads or 1
        )
