"""Embedder resource: one field picks the provider behind photogroup's Embedder interface."""

from typing import Literal

import dagster as dg
from pydantic import Field

from photogroup.embed import Embedder, LocalEmbedder


class EmbedderResource(dg.ConfigurableResource):
    """Turns working images into unit vectors; later providers plug in here."""

    provider: Literal["local"] = Field(
        default="local", description="'local': offline colour/gradient/layout descriptor."
    )
    batch_size: int = Field(default=64, description="Images per embed call.")

    def get_embedder(self) -> Embedder:
        return LocalEmbedder()
