"""The offline cut-out provider, one :class:`~photogroup.providers.CutoutProvider`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from photogroup.cutout import foreground_mask
from photogroup.providers import CutoutOutcome, latency_percentiles

#: Bump when foreground_mask changes its output: the id is part of every memo key.
LOCAL_MODEL_VERSION = "1"


class LocalCutouts:
    """GrabCut seeded from the border (photogroup.cutout), on this machine's cores."""

    model_id = f"local-grabcut-v{LOCAL_MODEL_VERSION}"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._seconds: list[float] = []
        self._failed = 0

    def cut_out(self, images: Sequence[Image.Image]) -> list[CutoutOutcome]:
        # OpenCV and NumPy release the GIL: threads use every core.
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            return list(pool.map(self._one, images))

    def _one(self, image: Image.Image) -> CutoutOutcome:
        start = time.perf_counter()
        try:
            mask = foreground_mask(image)
        except Exception as exc:  # one odd image must not fail the batch: report it
            with self._lock:
                self._failed += 1
            return CutoutOutcome(None, f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - start
        with self._lock:
            self._seconds.append(seconds)
        return CutoutOutcome(mask, None, seconds)

    def stats(self) -> dict[str, int | float]:
        with self._lock:
            return {
                "images": len(self._seconds) + self._failed,
                "failed": self._failed,
                **latency_percentiles(self._seconds, empty=0),
            }
