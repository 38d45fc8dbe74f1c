"""Content-addressed memo entries on the pipeline bucket, standing in for a cache server.

An entry lives at ``<prefix>/<namespace>/<key[:2]>/<key>`` where the namespace names the
stage and everything its result depends on besides the key (code version, model id), and
the key is a SHA-256. Entries are immutable: two runs writing one key write the same
bytes, and S3 PUTs are atomic, so concurrent writers are safe. An unreadable entry is a
miss (logged by the caller), and the recomputed value overwrites it.

Lookups are batched: a stage first reads its batch's *pack* (``<namespace>/packs/<batch>``,
every entry the batch used last time, in one object), then fetches only the keys the pack
lacks, concurrently. A re-run of an unchanged batch is one GET per stage, not one per image.
"""

import json
import tempfile
from collections.abc import Callable, Iterable

from pydantic import Field

from resources.s3 import FetchingBucket, FetchReport, put_objects

#: Packs larger than this are spooled to a temporary file while they are encoded.
SPOOL_BYTES = 8 * 2**20


class MemoStore(FetchingBucket):
    """Memo entries next to the data; bump a stage's code version to invalidate it."""

    bucket: str = Field(description="Pipeline bucket (PIPELINE_BUCKET) that holds the entries.")
    prefix: str = Field(default="memo", description="Key prefix of all memo entries.")
    max_concurrency: int = Field(default=16, description="Parallel writes.")

    def entry_key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}/{namespace}/{key[:2]}/{key}"

    def get_many(
        self, namespace: str, keys: Iterable[str], totals: FetchReport | None = None
    ) -> tuple[dict[str, bytes], dict]:
        """Found entries by key, and lookup errors other than 'not found' by key.

        ``totals``, if given, has this fetch's metrics added (without the bytes).
        """
        wanted = {self.entry_key(namespace, k): k for k in dict.fromkeys(keys)}
        report = self.fetch(list(wanted))
        if totals is not None:
            totals += report.without_bytes()
        found = {wanted[k]: v for k, v in report.data.items()}
        errors = {wanted[k]: e for k, e in report.errors.items() if not e.startswith("NoSuchKey")}
        return found, errors

    def get_json_many(
        self, namespace: str, keys: Iterable[str], on_corrupt: Callable[[str, str], None]
    ) -> dict[str, dict]:
        """Like get_many, decoded; corrupt or unreadable entries are reported and missed."""
        raw, errors = self.get_many(namespace, keys)
        for key, error in errors.items():
            on_corrupt(key, error)
        out = {}
        for key, blob in raw.items():
            try:
                out[key] = json.loads(blob)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                on_corrupt(key, f"unreadable entry: {exc}")
        return out

    def lookup(
        self,
        namespace: str,
        keys: Iterable[str],
        on_corrupt: Callable[[str, str], None],
        pack: str | None = None,
    ) -> tuple[dict[str, dict], bool]:
        """Entries for ``keys``, and whether the pack named ``pack`` held all of them."""
        wanted = list(dict.fromkeys(keys))
        packed = self._read_pack(namespace, pack, on_corrupt) if pack else {}
        found = {k: packed[k] for k in wanted if k in packed}
        complete = len(found) == len(wanted)
        rest = [k for k in wanted if k not in found]
        found.update(self.get_json_many(namespace, rest, on_corrupt))
        return found, complete

    def write_pack(self, namespace: str, pack: str, entries: dict[str, dict]) -> None:
        """The bytes of ``json.dumps(entries, sort_keys=True)``, encoded entry by entry into
        a spooled file: 20,000 images' features (ORB keypoints) are ~230 MB of JSON, which
        as one str and then its bytes would add twice that to the step's peak memory."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
            body.write(b"{")
            for i, key in enumerate(sorted(entries)):
                item = f"{json.dumps(key)}: {json.dumps(entries[key], sort_keys=True)}"
                body.write(f"{', ' if i else ''}{item}".encode())
            body.write(b"}")
            body.seek(0)
            self.s3.get_client().put_object(
                Bucket=self.bucket, Key=self.pack_key(namespace, pack), Body=body
            )

    def pack_key(self, namespace: str, pack: str) -> str:
        return f"{self.prefix}/{namespace}/packs/{pack}.json"

    def _read_pack(self, namespace: str, pack: str, on_corrupt) -> dict[str, dict]:
        key = self.pack_key(namespace, pack)
        report = self.fetch([key])
        if key not in report.data:
            if not report.errors.get(key, "").startswith("NoSuchKey"):
                on_corrupt(f"pack {pack}", report.errors[key])
            return {}
        try:
            entries = json.loads(report.data[key])
            if not isinstance(entries, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as exc:
            on_corrupt(f"pack {pack}", f"unreadable pack: {exc}")
            return {}
        return entries

    def put_many(self, namespace: str, entries: dict[str, bytes]) -> int:
        """Write entries concurrently; returns how many were written."""
        objects = {self.entry_key(namespace, k): v for k, v in entries.items()}
        return put_objects(self.s3.get_client(), self.bucket, objects,
                           max_concurrency=self.max_concurrency)  # fmt: skip

    def put_json_many(self, namespace: str, entries: dict[str, dict]) -> int:
        return self.put_many(
            namespace, {k: json.dumps(v, sort_keys=True).encode() for k, v in entries.items()}
        )
