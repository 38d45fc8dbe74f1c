"""Chunks of a batch mapped in this process or in a pool of worker processes.

The image stages feed chunks lazily: a chunk's bytes are fetched only when a worker is about
to need them, so at most ``processes + 1`` chunks are held at once whatever the batch size,
and each result comes back (to be memoised) as soon as its chunk finishes.

Workers are started with "spawn": a Dagster step may already run threads, and a child forked
while another thread holds a lock can deadlock. A spawned worker imports only the module of
the function it is sent, so the functions mapped here are module-level and Dagster-free
(this package), never closures.
"""

import multiprocessing
import os
import resource
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

K = TypeVar("K")
P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Failed:
    """What a compute function returns for an image it could not process (a provider
    refused it). Failed images are reported and left out of the memo, so the next run tries
    them again."""

    reason: str


#: A chunk of working copies in, one memo entry (a JSON-ready dict) or Failed per image out.
Compute = Callable[[Sequence[Image.Image]], list[Any]]


#: Worker processes sharing the cores with this one: set in each worker of a pool.
_sharing = 0


def _start_worker(processes: int) -> None:
    global _sharing
    _sharing = processes
    one_blas_thread()


def one_blas_thread() -> None:
    """NumPy's and SciPy's BLAS (OpenBLAS) compute on the calling thread only, for the whole
    process. The pipeline runs images in parallel on its own threads and worker processes;
    BLAS threads started beside them for small products (a Lab surface fit, a 6 x 6 solve)
    spin between calls and take the cores from that work: U²-Net-p cut-outs of phone photos
    on 2 cores took 205 CPU ms an image with them, 144 without (bench/cutouts.py), while
    clustering 100k images went from 5.6 to 6.1 s (bench/clustering.py). Called where a
    process starts its work: the code location, worker processes, the benchmarks."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def worker_threads() -> int | None:
    """Threads a pool's worker may use so that the pool fills the cores and no more; None
    in any other process (the caller's own default applies)."""
    return max(1, (os.cpu_count() or 1) // _sharing) if _sharing else None


def imap_chunks(
    func: Callable[[P], R],
    chunks: Iterable[tuple[K, P]],
    processes: int = 1,
    total: int | None = None,
) -> Iterator[tuple[K, R]]:
    """``(key, func(payload))`` for each ``(key, payload)`` of ``chunks``, as they finish.

    ``processes <= 1`` runs each chunk here, in order, drawing the next one meanwhile.
    Otherwise ``func`` (picklable) runs in that many spawned workers with one more chunk
    queued, so the next chunk is ready when a worker frees up; ``chunks`` is drawn only to
    keep that many in flight, which bounds memory to ``processes + 1`` payloads (two when
    computed here). Keys never leave this process.
    ``total``, the number of chunks if known, caps the workers: a worker costs a Python
    start-up (about a second), more than a lone chunk gains from it.
    """
    if total is not None:
        processes = min(processes, total)
    if processes <= 1:
        yield from _prefetched(func, chunks)
        return
    source = iter(chunks)
    pending: dict[Future, K] = {}
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(processes,),
    ) as pool:
        try:
            while True:
                for key, payload in source:
                    pending[pool.submit(func, payload)] = key
                    if len(pending) > processes:
                        break
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            # A failed chunk or an abandoned generator: queued chunks need not run.
            for future in pending:
                future.cancel()


_END = object()


def _prefetched(func: Callable[[P], R], chunks: Iterable[tuple[K, P]]) -> Iterator[tuple[K, R]]:
    """Each chunk computed here, in order, while the next one is drawn (its bytes fetched)
    on a thread: fetching a chunk and computing the one before overlap, as they do with
    worker processes. At most two payloads are held; the source is only ever advanced by
    one thread at a time (a generator cannot be drawn from concurrently)."""
    source = iter(chunks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as drawer:
        upcoming = drawer.submit(next, source, _END)
        while (item := upcoming.result()) is not _END:
            upcoming = drawer.submit(next, source, _END)
            key, payload = item
            yield key, func(payload)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's VmHWM where there is one: ru_maxrss also counts what the parent had resident
    when it forked, so a spawned worker (fork, then exec) would report its parent's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20, 1)


@dataclass(frozen=True)
class Worker:
    """The process that computed a chunk, and its peak memory when it finished it."""

    pid: int
    peak_rss_mb: float


def this_worker() -> Worker:
    return Worker(os.getpid(), peak_rss_mb())


def with_worker(func: Callable[[P], R], payload: P) -> tuple[R, Worker]:
    """``func(payload)`` and the process that ran it, as the worker itself reports it
    (RUSAGE_CHILDREN would also count the subprocesses Dagster starts to capture logs)."""
    return func(payload), this_worker()
