"""Each tenant's catalogue on the pipeline bucket, under ``catalog/<tenant>/``:

* ``manifest.json``: the embedding model, and for each batch in the index its sequence
  number (order of arrival, which decides what "earlier" means) and row count;
* ``rows.parquet``: one row per entry (id, batch, key, file, SHA-256, group, product, seq);
* ``vectors.faiss`` and ``hashes.npz``: the embedding and pHash indexes.

The per-batch segments themselves are the ``catalog_index`` asset's Parquet tables, so a
rebuild reads history from there without re-fetching or re-embedding any image.
"""

import io
import json
from dataclasses import dataclass, field

import botocore.exceptions
import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from photogroup.catalog_index import HashIndex, VectorIndex
from photogroup.cluster import parse_hashes
from resources.parquet_io_manager import read_parquet_bytes
from resources.s3 import S3Resource, check_bucket_name

ROW_COLUMNS = ["id", "batch", "key", "file", "sha256", "group_id", "product_id", "seq"]


@dataclass
class TenantCatalog:
    """One tenant's catalogue in memory."""

    model_id: str = ""
    dim: int = 0
    batches: dict[str, dict] = field(default_factory=dict)  # batch -> {"seq", "rows"}
    rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROW_COLUMNS))
    vectors: VectorIndex | None = None
    hashes: HashIndex | None = None

    @property
    def next_seq(self) -> int:
        return 1 + max((b["seq"] for b in self.batches.values()), default=0)

    def remove_batch(self, batch: str) -> int:
        """Drop a batch's entries; returns how many."""
        ids = self.rows.id[self.rows.batch == batch].to_numpy(dtype=np.int64)
        if self.vectors is not None and len(ids):
            self.vectors.remove(ids)
        if self.hashes is not None and len(ids):
            self.hashes.remove(ids)
        self.rows = self.rows[self.rows.batch != batch].reset_index(drop=True)
        self.batches.pop(batch, None)
        return len(ids)

    def add_batch(self, batch: str, segment: pd.DataFrame, seq: int | None = None) -> None:
        """Add a batch's segment (columns of ``ROW_COLUMNS`` less seq, plus ``embedding``
        and ``phash_d4``); a batch already present is replaced, keeping its place."""
        if batch in self.batches:
            seq = self.batches[batch]["seq"]
            self.remove_batch(batch)
        seq = self.next_seq if seq is None else seq
        if len(segment):
            vectors = np.stack(segment.embedding.to_numpy()).astype(np.float32)
            d4 = parse_hashes(list(segment.phash_d4))
            ids = segment.id.to_numpy(dtype=np.int64)
            if self.vectors is None:
                self.vectors, self.dim = VectorIndex(vectors.shape[1]), vectors.shape[1]
            if self.hashes is None:
                self.hashes = HashIndex()
            self.vectors.add(ids, vectors)
            self.hashes.add(ids, d4)
        rows = segment.assign(seq=seq)[ROW_COLUMNS]
        self.rows = pd.concat([self.rows, rows], ignore_index=True) if len(self.rows) else rows
        self.batches[batch] = {"seq": seq, "rows": len(segment)}


class CatalogStore(dg.ConfigurableResource):
    """Loads and saves tenants' catalogues; tenants never share an object."""

    s3: dg.ResourceDependency[S3Resource]
    bucket: str = Field(description="Pipeline bucket (PIPELINE_BUCKET).")
    prefix: str = Field(default="catalog", description="Key prefix of the catalogues.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_bucket_name(self.bucket)

    def _key(self, tenant: str, name: str) -> str:
        return f"{self.prefix}/{tenant}/{name}"

    def _get(self, tenant: str, name: str) -> bytes | None:
        try:
            response = self.s3.get_client().get_object(
                Bucket=self.bucket, Key=self._key(tenant, name)
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read()

    def _put(self, tenant: str, name: str, body: bytes) -> None:
        self.s3.get_client().put_object(Bucket=self.bucket, Key=self._key(tenant, name), Body=body)

    def load(self, tenant: str) -> TenantCatalog:
        manifest = self._get(tenant, "manifest.json")
        if manifest is None:
            return TenantCatalog()
        meta = json.loads(manifest)
        rows = read_parquet_bytes(self._get(tenant, "rows.parquet") or b"")
        vectors = self._get(tenant, "vectors.faiss")
        hashes = self._get(tenant, "hashes.npz")
        return TenantCatalog(
            model_id=meta["model_id"],
            dim=meta["dim"],
            batches=meta["batches"],
            rows=rows,
            vectors=VectorIndex.from_bytes(vectors) if vectors else None,
            hashes=HashIndex.from_bytes(hashes) if hashes else None,
        )

    def save(self, tenant: str, catalog: TenantCatalog) -> None:
        # Indexes and rows first, the manifest last: a reader never sees a manifest that
        # names rows which are not written yet.
        if catalog.vectors is not None:
            self._put(tenant, "vectors.faiss", catalog.vectors.to_bytes())
        if catalog.hashes is not None:
            self._put(tenant, "hashes.npz", catalog.hashes.to_bytes())
        buffer = io.BytesIO()
        catalog.rows.to_parquet(buffer, index=False)
        self._put(tenant, "rows.parquet", buffer.getvalue())
        manifest = {"model_id": catalog.model_id, "dim": catalog.dim, "batches": catalog.batches}
        self._put(tenant, "manifest.json", json.dumps(manifest, sort_keys=True).encode())
