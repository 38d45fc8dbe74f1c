"""What the embedder and cut-out resources share: the Bedrock and model-file settings, the
S3 dependency, and reading the settings left unset from the environment when a run starts.

Each resource declares only what differs: its ``provider`` and ``onnx_model`` fields (their
descriptions name its own variables), its ``threads`` default, its provider-specific fields,
and the variables behind them in ``ENVIRONMENT``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import dagster as dg
from pydantic import Field

from resources.run_settings import resolve
from resources.s3 import S3Resource

if TYPE_CHECKING:  # boto3 is imported only when a run picks bedrock
    from resources.bedrock_client import BedrockClient

B = TypeVar("B", bound="BedrockClient")


@dataclass(frozen=True)
class ProviderSettings:
    """The settings every provider resource resolves (a resource's own settings extend it)."""

    provider: str
    onnx_model: str
    bedrock_region: str | None
    bedrock_endpoint_url: str | None


class ProviderResource(dg.ConfigurableResource):
    """Base of the resources that pick a provider; not a resource of its own."""

    #: field -> (variable read when the field is unset, type, default when both are unset);
    #: a subclass adds its own with ``ProviderResource.ENVIRONMENT | {...}``.
    ENVIRONMENT: ClassVar[dict[str, tuple[str, Any, Any]]] = {
        "bedrock_region": ("AWS_REGION", str, None),
        "bedrock_endpoint_url": ("BEDROCK_ENDPOINT_URL", str, None),
    }

    onnx_cache_dir: str = Field(
        default=".local/models",
        description="Where model files named by s3:// are cached by ETag.",
    )
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
    bedrock_max_concurrency: int = Field(default=4, description="bedrock: requests in flight.")
    bedrock_max_attempts: int = Field(
        default=6, description="bedrock: tries per image (retryable errors only)."
    )
    s3: dg.ResourceDependency[S3Resource]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.settings()  # a malformed variable fails the step that needs us, before work

    def settings(self) -> ProviderSettings:
        """The settings in effect; a subclass narrows the type to its own dataclass."""
        raise NotImplementedError

    def _resolved(self) -> dict[str, Any]:
        """Every field of ``ENVIRONMENT``: configured, else its variable, else the default."""
        return resolve(self, self.ENVIRONMENT)

    def _model_file(self, model: str) -> Path:
        """A model file as a local path (an s3:// object cached); empty, the error names
        the onnx provider's variable."""
        from resources.model_files import resolve_model_file

        if not model:
            variable = self.ENVIRONMENT["onnx_model"][0]
            raise ValueError(f"provider 'onnx' needs ${variable} (or onnx_model): a local "
                             "path or s3://bucket/key")  # fmt: skip
        return resolve_model_file(model, self.s3.get_client(), Path(self.onnx_cache_dir))

    def _bedrock(self, provider: "type[B]", settings: ProviderSettings, **kwargs: Any) -> B:
        """A Bedrock provider built with the shared settings (``kwargs``: its own)."""
        return provider.from_settings(
            region=settings.bedrock_region,
            endpoint_url=settings.bedrock_endpoint_url,
            max_concurrency=self.bedrock_max_concurrency,
            max_attempts=self.bedrock_max_attempts,
            **kwargs,
        )
