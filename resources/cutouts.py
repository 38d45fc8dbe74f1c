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
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, SecretStr

from photogroup.providers import CutoutProvider
from resources.s3 import S3Resource


class CutoutResource(dg.ConfigurableResource):
    """Turns product photos into foreground masks."""

    provider: Literal["u2netp", "local", "replicate", "bedrock", "onnx"] = Field(
        default="u2netp",
        description="'u2netp' (offline model), 'local' (offline GrabCut), 'replicate', "
        "'bedrock' or 'onnx' (your model).",
    )
    requests_per_minute: float = Field(
        default=500.0,
        description="replicate/bedrock: the account's quota; all runs together use 90 % of it.",
    )
    shared_limiter: bool = Field(
        default=True,
        description="Share the quota across runs through limits/<provider>.json on "
        "limits_bucket; off, each run paces itself alone.",
    )
    limits_bucket: str = Field(default="", description="Bucket of the shared limiter state.")
    replicate_version: str = Field(default="", description="replicate: model version id.")
    replicate_base_url: str = Field(
        default="https://api.replicate.com",
        description="replicate: API origin; the token is sent to this origin only.",
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
    bedrock_region: str | None = Field(default=None, description="bedrock: AWS region.")
    bedrock_endpoint_url: str | None = Field(
        default=None, description="bedrock: endpoint override (VPC endpoint, a stand-in)."
    )
    bedrock_max_concurrency: int = Field(default=4, description="bedrock: requests in flight.")
    bedrock_max_attempts: int = Field(
        default=6, description="bedrock: tries per image (retryable errors only)."
    )
    onnx_model: str = Field(default="", description="onnx: local path or s3://bucket/key.")
    onnx_cache_dir: str = Field(
        default=".local/models", description="onnx: where s3:// models are cached by ETag."
    )
    onnx_input_size: int = Field(default=0, description="onnx: side; 0 reads the model's.")
    u2netp_model: str = Field(
        default="",
        description="u2netp: the model file, a local path or s3://bucket/key (cached in "
        "onnx_cache_dir); empty: .local/models/u2netp.onnx in the repository, where the "
        "set-up puts it. Its SHA-256 is checked either way.",
    )
    threads: int = Field(default=0, description="local/onnx/u2netp: CPU threads (0: all cores).")
    s3: dg.ResourceDependency[S3Resource]

    @property
    def in_process(self) -> bool:
        """Whether the provider computes in this process (no remote quota, no polling)."""
        return self.provider in ("u2netp", "local", "onnx")

    def get_provider(self, tenant: str) -> CutoutProvider:
        """A provider for one run of ``tenant``'s batch (its limiter knows the tenant)."""
        if self.provider == "local":
            from photogroup.cutout_providers import LocalCutouts

            return LocalCutouts(threads=self.threads or None)
        if self.provider == "u2netp":
            return self._u2netp()
        if self.provider == "onnx":
            return self._onnx()
        limiter = self._limiter(tenant)
        if self.provider == "replicate":
            from resources.replicate_cutouts import ReplicateCutouts

            # Read when the run starts and held as a SecretStr: never part of the config.
            token = SecretStr(os.environ.get(self.replicate_token_env, ""))
            if not token.get_secret_value().strip():
                raise ValueError(f"provider 'replicate' needs ${self.replicate_token_env}")
            if not self.replicate_version:
                raise ValueError("provider 'replicate' needs replicate_version")
            return ReplicateCutouts(
                token,
                self.replicate_version,
                base_url=self.replicate_base_url,
                limiter=limiter,
                create_concurrency=self.replicate_create_concurrency,
                poll_concurrency=self.replicate_poll_concurrency,
                poll_interval=self.replicate_poll_interval,
                prediction_timeout=self.replicate_prediction_timeout,
            )
        from resources.bedrock_cutouts import BedrockCutouts

        return BedrockCutouts.from_settings(
            region=self.bedrock_region,
            endpoint_url=self.bedrock_endpoint_url,
            requests_per_minute=self.requests_per_minute,
            max_concurrency=self.bedrock_max_concurrency,
            max_attempts=self.bedrock_max_attempts,
            limiter=limiter,
        )

    def _limiter(self, tenant: str):
        from photogroup.ratelimit import TokenBucket

        if not self.shared_limiter:
            return TokenBucket.for_limit(self.requests_per_minute)
        from resources.shared_ratelimit import SharedTokenBucket

        if not self.limits_bucket:
            raise ValueError("shared_limiter needs limits_bucket (the pipeline bucket)")
        return SharedTokenBucket.for_limit(
            self.requests_per_minute,
            client=self.s3.get_client(),
            bucket=self.limits_bucket,
            key=f"limits/{self.provider}.json",
            tenant=tenant,
        )

    def _u2netp(self) -> CutoutProvider:
        from photogroup.u2netp import DEFAULT_MODEL_PATH, U2netpCutouts
        from resources.model_files import resolve_model_file

        path: Path = Path(self.u2netp_model) if self.u2netp_model else DEFAULT_MODEL_PATH
        if self.u2netp_model.startswith("s3://"):
            path = resolve_model_file(
                self.u2netp_model, self.s3.get_client(), Path(self.onnx_cache_dir)
            )
        # A local path is checked by U2netpCutouts: missing or not the pinned file, the
        # error names the SHA-256 expected and the command that fetches it.
        # One single-threaded model run per core at a time (see U2netpCutouts).
        return U2netpCutouts(path, workers=self.threads or os.cpu_count() or 1)

    def _onnx(self) -> CutoutProvider:
        from photogroup.onnx_cutouts import OnnxCutouts, SaliencyPreprocessing
        from resources.model_files import resolve_model_file

        if not self.onnx_model:
            raise ValueError("provider 'onnx' needs onnx_model: a local path or s3://bucket/key")
        path = resolve_model_file(self.onnx_model, self.s3.get_client(), Path(self.onnx_cache_dir))
        size = (self.onnx_input_size, self.onnx_input_size) if self.onnx_input_size else None
        return OnnxCutouts(
            path, SaliencyPreprocessing(size=size), intra_op_num_threads=self.threads or 1
        )
