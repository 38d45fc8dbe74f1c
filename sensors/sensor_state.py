"""The upload sensor's cursor, bounded however many batches exist.

Dagster stores a sensor's cursor on every tick, so it must stay small. Instead of every
batch ever handled, it keeps a *watermark* (every sealing at or before it was handled) and
the sealings handled after it (``recent``). Each tick moves the watermark up to ``MARGIN``
before now, but never past a ready batch still waiting for its turn, and forgets what
it covers; so the cursor holds about the batches sealed in the last ``MARGIN`` plus
nothing else. ``MARGIN`` absorbs clock skew between S3's LastModified and this host.

A sealing is a batch's seal token with its seal time: the ``_SUCCESS`` marker's
LastModified, or for a batch sealed by a quiet period, the moment it became quiet.
Batches seen but not run yet (beyond a tick's cap, sealed with promised files still
missing, or with a malformed marker) are kept in ``pending`` and looked at every tick
whatever the watermark: the cursor grows with the backlog, not with history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MARGIN = timedelta(minutes=10)


@dataclass
class SensorState:
    watermark: datetime | None = None
    recent: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # key -> sealing
    last_tenant: str | None = None
    pending: dict[str, str] = field(default_factory=dict)  # key -> token, not run yet
    #: A cursor from before the watermark (every batch's token): read once, then dropped.
    legacy: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_cursor(cls, raw: str | None) -> SensorState:
        doc = json.loads(raw) if raw else {}
        watermark = doc.get("watermark")
        recent = doc.get("recent", {})
        return cls(
            watermark=datetime.fromisoformat(watermark) if watermark else None,
            recent={k: (t, datetime.fromisoformat(s)) for k, (t, s) in recent.items()},
            last_tenant=doc.get("last_tenant"),
            pending=doc.get("pending", {}),
            legacy=doc.get("done", {}),
        )

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "recent": {k: [t, s.isoformat()] for k, (t, s) in sorted(self.recent.items())},
                "pending": dict(sorted(self.pending.items())),
                "last_tenant": self.last_tenant,
            },
            separators=(",", ":"),
        )

    def handled(self, partition_key: str, token: str, sealed: datetime) -> bool:
        """Whether this sealing of the batch was handled already."""
        if self.pending.get(partition_key) == token:
            return False
        if self.watermark is not None and sealed <= self.watermark:
            return True
        if self.legacy.get(partition_key) == token:
            self.recent[partition_key] = (token, sealed)  # its seal time, learnt from S3
            return True
        known = self.recent.get(partition_key)
        return known is not None and known[0] == token

    def knows(self, partition_key: str) -> bool:
        """Whether an earlier sealing of this batch was handled since the watermark."""
        return partition_key in self.recent

    def mark(self, partition_key: str, token: str, sealed: datetime) -> None:
        self.recent[partition_key] = (token, sealed)

    def advance(self, now: datetime) -> None:
        """Move the watermark up to ``MARGIN`` before now and forget what it covers."""
        target = now.astimezone(UTC) - MARGIN
        if self.watermark is None or target > self.watermark:
            self.watermark = target
        self.recent = {k: v for k, v in self.recent.items() if v[1] > self.watermark}
        self.legacy = {}
