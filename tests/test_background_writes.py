"""Writes behind compute: in order, bounded, and a failure stops the writes after it."""

import threading

import pytest

from resources.s3 import BackgroundWrites


def test_writes_run_in_order_and_wait_returns_when_all_are_done():
    done: list[int] = []
    writes = BackgroundWrites()
    for k in range(20):
        writes.submit(done.append, k)
    writes.wait()
    assert done == list(range(20))


def test_submit_returns_while_the_write_runs_and_holds_at_most_pending():
    release = threading.Event()
    started: list[int] = []

    def slow(k: int) -> None:
        started.append(k)
        release.wait(5)

    writes = BackgroundWrites(pending=2)
    writes.submit(slow, 0)
    writes.submit(slow, 1)  # queued behind the first: the caller goes on computing
    assert started in ([], [0])
    blocked = threading.Thread(target=writes.submit, args=(slow, 2))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # a third waits for the first to finish: bytes held are bounded
    release.set()
    blocked.join(5)
    writes.wait()
    assert started == [0, 1, 2]


def test_a_failed_write_is_raised_and_no_write_after_it_runs():
    done: list[str] = []

    def fail(_: str) -> None:
        raise ConnectionError("endpoint unreachable")

    writes = BackgroundWrites(pending=10)
    writes.submit(done.append, "object")
    writes.submit(fail, "entry")
    writes.submit(done.append, "entry of the failed object")
    with pytest.raises(ConnectionError, match="endpoint unreachable"):
        writes.wait()
    assert done == ["object"]


def test_a_failure_surfaces_at_the_next_submit():
    def fail() -> None:
        raise ConnectionError("endpoint unreachable")

    writes = BackgroundWrites(pending=1)
    writes.submit(fail)
    with pytest.raises(ConnectionError):
        writes.submit(print)
