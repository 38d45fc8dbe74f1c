"""Each batch's grouping edit log: JSON lines at ``edits/<tenant>/<batch>.jsonl``.

Appends are compare-and-swap: read the log and its ETag, validate the new edit against the
groups that log gives, then PUT with ``If-Match`` (``If-None-Match: *`` for a new log). Two
people editing one batch at once cannot lose each other's edit: the second PUT is refused
with 412, and its edit is validated again on the log that now holds the first.
"""

from collections.abc import Callable

import botocore.exceptions
import dagster as dg
import tenacity
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

        def try_once() -> str:
            text, etag = self.read(partition_key)
            line = make_line(text)
            body = (text if not text or text.endswith("\n") else text + "\n") + line + "\n"
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                client.put_object(
                    Bucket=self.bucket, Key=self.key(partition_key), Body=body.encode(),
                    ContentType="application/x-ndjson", **condition,
                )  # fmt: skip
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    raise _Appended() from None  # someone else appended: read and check again
                raise
            return line

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Appended),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.05),
            reraise=True,
        )
        try:
            return retrying(try_once)
        except _Appended:
            raise EditLogConflict(
                f"the edit log of {partition_key} changed {attempts} times while this edit "
                "was checked; try again"
            ) from None


class _Appended(Exception):
    """The log changed between our read and our conditional PUT."""
