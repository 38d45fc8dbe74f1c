"""Upload batches as dynamic partitions.

Partition key format: ``<tenant>/<batch>``, the same two path segments as the upload
prefix ``uploads/<tenant>/<batch>/``. Each name is 1-63 characters of letters, digits,
``.``, ``_`` or ``-``, starting with a letter or digit, so the ``/`` is unambiguous and
keys are safe in S3 keys, file names and run tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dagster as dg

upload_batch_partitions = dg.DynamicPartitionsDefinition(name="upload_batches")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True, order=True)
class BatchKey:
    tenant: str
    batch: str

    def __post_init__(self) -> None:
        for label, value in (("tenant", self.tenant), ("batch", self.batch)):
            if not _NAME.fullmatch(value) or ".." in value:
                raise ValueError(
                    f"invalid {label} {value!r}: use 1-63 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit"
                )

    @property
    def partition_key(self) -> str:
        return f"{self.tenant}/{self.batch}"

    @classmethod
    def parse(cls, partition_key: str) -> BatchKey:
        tenant, sep, batch = partition_key.partition("/")
        if not sep:
            raise ValueError(f"partition key {partition_key!r} is not '<tenant>/<batch>'")
        return cls(tenant, batch)
