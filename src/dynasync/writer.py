"""Deliver writes to a Target: 25 per BatchWriteItem, several requests in
flight, every request through the one retry loop (dynasync.retry) and the
write limits (dynasync.budget), and a rejected batch narrowed down to the
items DynamoDB can never accept.

A delivery runs on daemon workers (dynasync.workers), a few "lanes" each
sending one request at a time, so the caller can read and plan the next slice
meanwhile, and a stop never waits for a request DynamoDB does not answer.
Callers hand over at most one write per key, so requests may run in parallel
without reordering the writes of any key.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from dynasync import workers
from dynasync.budget import Budget, units
from dynasync.exceptions import Abandoned, RetryableError, TargetUnavailableError, ValidationError
from dynasync.objects import Offload
from dynasync.retry import RequestStats, Retrier
from dynasync.target import MAX_BATCH_WRITE, Target, WriteRequest
from dynasync.values import Item, key_text
from dynasync.writes import DeadLetterKind, Rejected, Write


@dataclass
class WriteResult:
    """What became of a delivery's writes: those DynamoDB acknowledged, those it
    refused (dead letters), and the requests it took."""

    delivered: list[Write] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    stats: RequestStats = field(default_factory=RequestStats)

    def add(self, other: WriteResult) -> None:
        """Merge another result into this one."""
        self.delivered.extend(other.delivered)
        self.rejected.extend(other.rejected)
        self.stats.add(other.stats)


class Delivery:
    """Writes on their way: `wait()` for what became of them."""

    def __init__(self, writer: Writer, batches: Mapping[str, Sequence[Write]]) -> None:
        self._writer = writer
        self._queue = collections.deque(
            (table, list(writes[i : i + MAX_BATCH_WRITE]))
            for table, writes in batches.items()
            for i in range(0, len(writes), MAX_BATCH_WRITE)
        )
        self._lock = threading.Lock()
        self._result = WriteResult()
        self._error: BaseException | None = None
        lanes = min(writer.max_concurrency, len(self._queue))
        self._lanes: list[Future[None]] = [workers.submit(self._lane) for _ in range(lanes)]

    def _lane(self) -> None:
        while True:
            with self._lock:
                if self._error is not None or not self._queue:
                    return
                table, chunk = self._queue.popleft()
            try:
                part = self._writer.send(table, chunk)
            except BaseException as e:  # handed to wait(), which raises it
                with self._lock:
                    self._error = self._error or e
                return
            with self._lock:
                self._result.add(part)

    def wait(self) -> WriteResult:
        """What became of the writes; raises what stopped the delivery. Once a stop is
        asked for, no new request goes out; a write already sent is waited for until
        its deadline, a read abandoned after a while (see dynasync.workers)."""
        stop = self._writer.retrier.stop
        for lane in self._lanes:
            try:
                workers.wait(lane, stop, self._writer.retrier.heartbeat)
            except Abandoned:
                message = "stopped, abandoning requests DynamoDB has not answered"
                raise TargetUnavailableError(message) from None
        if self._error is not None:
            raise self._error
        return self._result


class Writer:
    """Sends writes, `max_concurrency` requests at once, within a write budget."""

    def __init__(
        self,
        target: Target,
        retrier: Retrier,
        max_concurrency: int = 1,
        budget: Budget | None = None,
        offload: Offload | None = None,
    ) -> None:
        self.target = target
        self.retrier = retrier
        self.max_concurrency = max_concurrency
        self.budget = budget or Budget(None, max_concurrency)
        self.offload = offload  # S3 objects of oversized items: recorded first, written before their batch

    def start(self, batches: Mapping[str, Sequence[Write]]) -> Delivery:
        """Start delivering writes to their target tables; returns at once."""
        if self.offload is not None:
            self.offload.before(batches)
        return Delivery(self, batches)

    def write(self, table: str, writes: Sequence[Write]) -> WriteResult:
        """Deliver every write; return those DynamoDB can never accept."""
        return self.start({table: writes}).wait()

    def send(self, table: str, writes: list[Write]) -> WriteResult:
        """One batch, retried until DynamoDB took it all; an item it refuses is narrowed down."""
        result = WriteResult()
        last = [writes]  # what the failing attempt sent: DynamoDB took the rest already

        def attempt(pending: list[Write]) -> tuple[list[None], list[Write]]:
            last[0] = pending
            return [], self._limited(table, pending)

        try:
            self.retrier.drain(attempt, writes, f"writing to {table!r}", result.stats, "UnprocessedItems",
                               on_worker=True)
            result.delivered.extend(writes)
        except ValidationError as e:
            pending = last[0]
            if len(pending) == 1:
                reason = f"DynamoDB rejected the item: {e}"
                result.rejected.append(Rejected(pending[0].ref, reason, pending[0], DeadLetterKind.REFUSED))
                return result
            # One bad item fails the whole batch: bisect to find it.
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                result.add(self.send(table, part))
        return result

    def _limited(self, table: str, pending: list[Write]) -> list[Write]:
        """One request, within the write limits; they learn from how DynamoDB answers."""
        budget, stop = self.budget, self.retrier.stop
        amount = _units(pending) if budget.counts(table) else None
        wait = budget.delay(table, amount)
        if wait > 0 and stop.wait(wait):
            raise TargetUnavailableError(f"writing to {table!r}: stopped while waiting for the write budget")
        limit = budget.limit(table)
        with limit.slot(stop):
            while (pause := limit.spacing()) > 0:
                if stop.wait(pause):
                    raise TargetUnavailableError(f"writing to {table!r}: stopped while throttled")
            if self.offload is not None:
                # An item is never sent before the object it points to, and, whatever
                # the budget and throttling waits, soon after it (objects.grace).
                self.offload.upload(pending, self.retrier.max_retry_time / 2)
            sent_at = limit.now()
            try:
                unprocessed = self._batch(table, pending)
            except RetryableError as e:
                if e.throttle:
                    limit.throttled(amount if amount is not None else _units(pending), sent_at)
                raise
        if unprocessed:
            limit.throttled(amount if amount is not None else _units(pending), sent_at)
        else:
            limit.succeeded()
        return unprocessed

    def _batch(self, table: str, pending: list[Write]) -> list[Write]:
        """One BatchWriteItem; the writes DynamoDB left unprocessed."""
        unprocessed = self.target.batch_write(table, [w.request for w in pending])
        if not unprocessed:
            return []
        # A batch holds one write per key: what DynamoDB hands back is matched by
        # the key's identity. Should a request come back unrecognisable, resend
        # everything: writes are idempotent, losing one is not.
        names = tuple(pending[0].key)
        try:
            left = {key_text({n: _body(r)[n] for n in names}) for r in unprocessed}
        except (KeyError, TypeError, ValueError, AttributeError):
            return pending
        matched = [w for w in pending if w.key_text in left]
        return matched if len(matched) == len(unprocessed) else pending


def _body(request: WriteRequest) -> Item:
    """A request's item (a Put) or key (a Delete)."""
    put = request.get("PutRequest")
    body: Item = put["Item"] if put is not None else request["DeleteRequest"]["Key"]
    return body


def _units(writes: Sequence[Write]) -> float:
    return float(sum(units(w.item) for w in writes))
