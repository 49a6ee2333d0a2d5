"""Daemon threads that make DynamoDB calls, so that a stop never waits for a
request DynamoDB does not answer.

Every attempt of the retry loop runs on one of these threads while the caller
waits, watching the stop event. Once a stop has been asked for, an attempt
gets ABANDON_AFTER seconds more; then the caller gives up on it and the
thread is left to finish (or time out) alone. Being daemon threads, they
never hold up the process's exit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from dynasync.exceptions import Abandoned

T = TypeVar("T")

ABANDON_AFTER = 5.0  # seconds an attempt may still take once a stop is asked for


class Stop(threading.Event):
    """A stop request that remembers when it was made."""

    def __init__(self) -> None:
        super().__init__()
        self.since: float | None = None

    def set(self) -> None:
        """Ask everything to stop."""
        if self.since is None:
            self.since = time.monotonic()
        super().set()


class _Pool:
    """Daemon worker threads, started as work needs them and reused."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run fn on a worker thread."""
        fut: Future[T] = Future()
        with self._lock:
            if self._idle == 0:
                threading.Thread(target=self._work, name="dynasync-call", daemon=True).start()
            else:
                self._idle -= 1
        self._jobs.put((fn, fut))
        return fut

    def _work(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # handed to the waiting caller
                    fut.set_exception(e)
            with self._lock:
                self._idle += 1


_POOL = _Pool()


def submit(fn: Callable[[], T]) -> Future[T]:
    """Run fn() on a daemon worker."""
    return _POOL.submit(fn)


def wait(fut: Future[T], stop: threading.Event, heartbeat: Callable[[], None] | None = None) -> T:
    """The future's result; Abandoned if a stop was asked for and it runs on too long.
    `heartbeat` is called every quarter of a second meanwhile: a wait for DynamoDB
    (a request, a retry, the write budget) is the process working, not hanging."""
    while True:
        try:
            return fut.result(timeout=0.25)
        except TimeoutError:
            if heartbeat is not None:
                heartbeat()
            since = getattr(stop, "since", None) if stop.is_set() else None
            if since is not None and time.monotonic() - since > ABANDON_AFTER:
                raise Abandoned() from None


def call(fn: Callable[[], T], stop: threading.Event, heartbeat: Callable[[], None] | None = None) -> T:
    """fn() on a daemon worker; Abandoned if a stop was asked for and it runs on too long."""
    return wait(_POOL.submit(fn), stop, heartbeat)
