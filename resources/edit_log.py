"""Each batch's grouping edit log: JSON lines at ``edits/<tenant>/<batch>.jsonl``.

Appends are compare-and-swap: read the log and its ETag, validate the new edit against the
groups that log gives, then PUT with ``If-Match`` (``If-None-Match: *`` for a new log). Two
people editing one batch at once cannot lose each other's edit: the second PUT is refused
with 412, and its edit is validated again on the log that now holds the first.
"""

import random
import time
from collections.abc import Callable

import botocore.exceptions
import dagster as dg
from pydantic import Field

from resources.s3 import S3Resource, check_bucket_name


class EditLogConflict(RuntimeError):
    """The log kept changing under us; nothing was written."""


class EditLog(dg.ConfigurableResource):
    """The grouping edit logs on the pipeline bucket."""

    s3: dg.ResourceDependency[S3Resource]
    bucket: str = Field(description="Pipeline bucket (PIPELINE_BUCKET).")
    prefix: str = Field(default="edits", description="Key prefix of the edit logs.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_bucket_name(self.bucket)

    def key(self, partition_key: str) -> str:
        return f"{self.prefix}/{partition_key}.jsonl"

    def read(self, partition_key: str) -> tuple[str, str | None]:
        """The log's text and ETag; ("", None) when the batch has no edits."""
        try:
            response = self.s3.get_client().get_object(
                Bucket=self.bucket, Key=self.key(partition_key)
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return "", None
            raise
        return response["Body"].read().decode(), response["ETag"]

    def append(self, partition_key: str, make_line: Callable[[str], str], attempts: int = 8) -> str:
        """Append ``make_line(current log)`` (which validates, raising to refuse)."""
        client = self.s3.get_client()
        for attempt in range(attempts):
            text, etag = self.read(partition_key)
            line = make_line(text)
            body = (text if not text or text.endswith("\n") else text + "\n") + line + "\n"
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                client.put_object(
                    Bucket=self.bucket, Key=self.key(partition_key), Body=body.encode(),
                    ContentType="application/x-ndjson", **condition,
                )  # fmt: skip
                return line
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # someone else appended
        raise EditLogConflict(f"the edit log of {partition_key} changed {attempts} times "
                              "while this edit was checked; try again")  # fmt: skip
