"""The one retry loop every DynamoDB call goes through.

A call is retried while it raises RetryableError (throttling, a 5xx, a broken
connection) and, for batch calls, while DynamoDB hands part of the batch back
unprocessed. Waits use exponential backoff with full jitter, bounded by
[dynamodb] max_retry_time, and end early when the process is asked to stop.
Each attempt runs on a daemon worker (dynasync.workers), so a stop never
waits long for a request DynamoDB does not answer.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from dynasync import workers
from dynasync.exceptions import Abandoned, RetryableError, TargetUnavailableError

T = TypeVar("T")
P = TypeVar("P")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0


@dataclass
class RequestStats:
    """DynamoDB requests sent, and the retries among them by error code."""

    requests: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # retried responses, by code
    throttles: Counter[str] = field(default_factory=Counter)  # the throttling ones among them

    def add(self, other: RequestStats) -> None:
        """Add another set of counts to these."""
        self.requests += other.requests
        self.retries += other.retries
        self.errors.update(other.errors)
        self.throttles.update(other.throttles)


def backoff(attempt: int) -> float:
    """Full jitter: a random wait up to the exponential bound."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class Retrier:
    """Retries retryable errors and partial results until a deadline or a stop request."""

    def __init__(
        self,
        max_retry_time: float,
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.max_retry_time = max_retry_time
        self.stop = stop or workers.Stop()
        self._sleep = sleep
        self._heartbeat = heartbeat

    def heartbeat(self) -> None:
        """Tell the systemd watchdog the process works (during a long wait for DynamoDB)."""
        if self._heartbeat is not None:
            self._heartbeat()

    def call(self, fn: Callable[[], T], what: str, stats: RequestStats) -> T:
        """fn(), retried while it raises RetryableError; `what` names the operation in errors."""
        results: list[T] = self.drain(lambda _: ([fn()], []), [None], what, stats, "")
        return results[0]

    def drain(
        self,
        send: Callable[[list[P]], tuple[list[T], list[P]]],
        pending: list[P],
        what: str,
        stats: RequestStats,
        leftover: str,
        on_worker: bool = False,
    ) -> list[T]:
        """Call send(pending) until it leaves nothing over, and return what it gave back.

        send returns (results, the part of `pending` DynamoDB did not process).
        A leftover counts as throttling under the code `leftover`; a
        RetryableError resends the same pending part. Each attempt runs on a
        daemon worker, unless the caller is one already (`on_worker`).
        """
        done: list[T] = []
        started, attempt = time.monotonic(), 0
        while True:
            stats.requests += 1
            try:
                if on_worker:
                    results, rest = send(pending)
                else:
                    results, rest = workers.call(functools.partial(send, pending), self.stop, self._heartbeat)
            except Abandoned:
                raise TargetUnavailableError(
                    f"{what}: stopped, abandoning a request DynamoDB has not answered"
                ) from None
            except RetryableError as e:
                self._wait(attempt, started, what, stats, e.code, e.throttle)
            else:
                done.extend(results)
                if not rest:
                    return done
                pending = rest
                self._wait(attempt, started, what, stats, leftover, True)
            attempt += 1

    def _wait(
        self, attempt: int, started: float, what: str, stats: RequestStats, code: str, throttle: bool
    ) -> None:
        stats.retries += 1
        stats.errors[code] += 1
        if throttle:
            stats.throttles[code] += 1
        if self.stop.is_set():
            raise TargetUnavailableError(f"{what}: stopped while retrying ({code})")
        if time.monotonic() - started > self.max_retry_time:
            raise TargetUnavailableError(
                f"{what}: DynamoDB still failing after {self.max_retry_time:g}s of retries ({code})"
            )
        if self._heartbeat is not None:
            self._heartbeat()
        delay = backoff(attempt)
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self.stop.wait(delay)

