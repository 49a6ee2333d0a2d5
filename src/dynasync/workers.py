"""Daemon threads that make DynamoDB calls, so that a stop never waits long
for a request DynamoDB does not answer, and never gives up on a write DynamoDB
could still apply.

Every attempt of the retry loop runs on one of these threads while the caller
waits, watching the stop event. Once a stop has been asked for:

* a write in flight (a call the Target marks with `writing`) is waited for
  until DynamoDB answers or its deadline passes; the Target ends it by then
  (connect_timeout + read_timeout for dynasync.dynamodb) and resets its
  connection, so nothing of it can reach DynamoDB after the lock is released.
  GRACE more seconds cover a Target that overruns its own deadline;
* no new write starts on a call the stop has reached: `writing` refuses it;
* anything else (a read, a wait) gets ABANDON_AFTER seconds from the stop, or
  from the end of the call's last write; then the caller gives up on it and
  the thread is left to finish alone. Being daemon threads, they never hold
  up the process's exit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from dynasync.exceptions import Abandoned, TargetUnavailableError

T = TypeVar("T")

ABANDON_AFTER = 5.0  # seconds a call with no write in flight may still take once a stop is asked for
GRACE = 1.0  # seconds past a write's deadline before the caller gives up on it anyway


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


class Job(Future[T]):
    """A call running on a worker: its result, and the write it has in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.stopping = False  # a stop reached this call: it starts no new write
        self.write_deadline: float | None = None  # the monotonic deadline of its write in flight
        self.write_ended: float | None = None  # when its last write ended

    def stop(self) -> None:
        """No new write from this call."""
        with self.lock:
            self.stopping = True


_local = threading.local()  # .job: the Job this worker thread runs


class Writing:
    """A write request in flight on this thread (see `writing`)."""

    __slots__ = ("_at", "_job")

    def __init__(self, deadline: float) -> None:
        self._at = deadline
        self._job: Job[Any] | None = getattr(_local, "job", None)

    def __enter__(self) -> None:
        job = self._job
        if job is not None:
            with job.lock:
                if job.stopping:
                    raise TargetUnavailableError("stopped: no new write is sent to DynamoDB")
                job.write_deadline = self._at

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        job = self._job
        if job is not None:
            with job.lock:
                job.write_deadline = None
                job.write_ended = time.monotonic()


def writing(deadline: float) -> Writing:
    """`with writing(deadline):` around a write request that ends by `deadline`
    (time.monotonic()): a stop waits for it; once a stop has reached the call,
    it raises TargetUnavailableError instead, and the write is never sent."""
    return Writing(deadline)


class _Pool:
    """Daemon worker threads, started as work needs them and reused."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Job[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, fn: Callable[[], T]) -> Job[T]:
        """Run fn on a worker thread."""
        job: Job[T] = Job()
        with self._lock:
            if self._idle == 0:
                threading.Thread(target=self._work, name="dynasync-call", daemon=True).start()
            else:
                self._idle -= 1
        self._jobs.put((fn, job))
        return job

    def _work(self) -> None:
        while True:
            fn, job = self._jobs.get()
            if job.set_running_or_notify_cancel():
                _local.job = job
                try:
                    job.set_result(fn())
                except BaseException as e:  # handed to the waiting caller
                    job.set_exception(e)
                finally:
                    _local.job = None
            with self._lock:
                self._idle += 1


_POOL = _Pool()


def submit(fn: Callable[[], T]) -> Job[T]:
    """Run fn() on a daemon worker."""
    return _POOL.submit(fn)


def wait(fut: Future[T], stop: threading.Event, heartbeat: Callable[[], None] | None = None) -> T:
    """The future's result; Abandoned if a stop was asked for and it runs on too
    long (never while it has a write in flight before that write's deadline).
    `heartbeat` is called every quarter of a second meanwhile: a wait for DynamoDB
    (a request, a retry, the write budget) is the process working, not hanging."""
    while True:
        if stop.is_set() and isinstance(fut, Job):
            fut.stop()
        try:
            return fut.result(timeout=0.25)
        except TimeoutError:
            if heartbeat is not None:
                heartbeat()
            if stop.is_set() and _gives_up(fut, getattr(stop, "since", None)):
                raise Abandoned() from None


def _gives_up(fut: Future[Any], since: float | None) -> bool:
    """Whether a stopped caller gives up on a call still running."""
    now = time.monotonic()
    if isinstance(fut, Job):
        with fut.lock:
            if fut.write_deadline is not None:
                return now > fut.write_deadline + GRACE
            if fut.write_ended is not None and since is not None:
                since = max(since, fut.write_ended)
    return since is not None and now - since > ABANDON_AFTER


def call(fn: Callable[[], T], stop: threading.Event, heartbeat: Callable[[], None] | None = None) -> T:
    """fn() on a daemon worker; Abandoned if a stop was asked for and it runs on too long."""
    return wait(_POOL.submit(fn), stop, heartbeat)
