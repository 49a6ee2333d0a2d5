"""Deliver writes to a Target: 25 per BatchWriteItem, several requests in
flight, retrying throttles, 5xx, broken connections and UnprocessedItems with
exponential backoff and jitter, and narrowing a rejected batch down to the
items DynamoDB can never accept.

Callers hand over at most one write per key, so requests may run in parallel
without reordering the writes of any key.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from dynasync.exceptions import TargetUnavailableError
from dynasync.target import MAX_BATCH_WRITE, Ref, RetryableError, Target, ValidationError, WriteRequest

T = TypeVar("T")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0


@dataclass
class Write:
    ref: Ref
    request: WriteRequest


@dataclass
class WriteStats:
    requests: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: WriteStats) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.errors.update(other.errors)


@dataclass
class WriteResult:
    rejected: list[tuple[Write, str]] = field(default_factory=list)
    stats: WriteStats = field(default_factory=WriteStats)


def backoff(attempt: int) -> float:
    """Full jitter: a random wait up to the exponential bound."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class Retrier:
    """Retries retryable errors until a deadline or a stop request."""

    def __init__(
        self,
        max_retry_time: float,
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.max_retry_time = max_retry_time
        self.stop = stop or threading.Event()
        self._sleep = sleep
        self._heartbeat = heartbeat

    def wait(self, attempt: int, started: float, what: str, stats: WriteStats, err: str) -> None:
        stats.retries += 1
        stats.errors[err] += 1
        if self.stop.is_set():
            raise TargetUnavailableError(f"{what}: stopped while retrying ({err})")
        if time.monotonic() - started > self.max_retry_time:
            raise TargetUnavailableError(
                f"{what}: DynamoDB still failing after {self.max_retry_time:g}s of retries ({err})"
            )
        delay = backoff(attempt)
        if self._heartbeat is not None:
            self._heartbeat()
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self.stop.wait(delay)

    def call(self, fn: Callable[[], T], what: str, stats: WriteStats) -> T:
        started, attempt = time.monotonic(), 0
        while True:
            try:
                stats.requests += 1
                return fn()
            except RetryableError as e:
                self.wait(attempt, started, what, stats, e.code)
                attempt += 1


class Writer:
    def __init__(self, target: Target, retrier: Retrier, max_concurrency: int = 1) -> None:
        self.target = target
        self.retrier = retrier
        self.max_concurrency = max_concurrency

    def write(self, table: str, writes: Sequence[Write]) -> WriteResult:
        chunks = [list(writes[i : i + MAX_BATCH_WRITE]) for i in range(0, len(writes), MAX_BATCH_WRITE)]
        result = WriteResult()
        if self.max_concurrency <= 1 or len(chunks) <= 1:
            parts = [self._send(table, c) for c in chunks]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(chunks))) as pool:
                parts = list(pool.map(lambda c: self._send(table, c), chunks))
        for part in parts:
            result.rejected.extend(part.rejected)
            result.stats.add(part.stats)
        return result

    def _send(self, table: str, writes: list[Write]) -> WriteResult:
        result = WriteResult()
        pending = writes
        started, attempt = time.monotonic(), 0
        while pending:
            result.stats.requests += 1
            try:
                unprocessed = self.target.batch_write(table, [w.request for w in pending])
            except ValidationError as e:
                if len(pending) == 1:
                    result.rejected.append((pending[0], f"DynamoDB rejected the item: {e}"))
                    return result
                # One bad item fails the whole batch: bisect to find it.
                half = len(pending) // 2
                for part in (pending[:half], pending[half:]):
                    sub = self._send(table, part)
                    result.rejected.extend(sub.rejected)
                    result.stats.add(sub.stats)
                return result
            except RetryableError as e:
                self.retrier.wait(attempt, started, f"writing to {table!r}", result.stats, e.code)
                attempt += 1
                continue
            if not unprocessed:
                return result
            matched = [w for w in pending if w.request in unprocessed]
            # Should DynamoDB ever echo a request back in another form, resend
            # everything: writes are idempotent, losing one is not.
            pending = matched if len(matched) == len(unprocessed) else pending
            self.retrier.wait(attempt, started, f"writing to {table!r}", result.stats, "UnprocessedItems")
            attempt += 1
        return result
