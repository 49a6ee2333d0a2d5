"""Deliver writes to a Target: 25 per BatchWriteItem, several requests in
flight, every request through the one retry loop (dynasync.retry), and a
rejected batch narrowed down to the items DynamoDB can never accept.

Callers hand over at most one write per key, so requests may run in parallel
without reordering the writes of any key.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dynasync.exceptions import ValidationError
from dynasync.retry import RequestStats, Retrier
from dynasync.target import MAX_BATCH_WRITE, Target
from dynasync.writes import Rejected, Write


@dataclass
class WriteResult:
    """What DynamoDB refused of a delivery, and the requests it took."""

    rejected: list[Rejected] = field(default_factory=list)
    stats: RequestStats = field(default_factory=RequestStats)

    def add(self, other: WriteResult) -> None:
        """Merge another result into this one."""
        self.rejected.extend(other.rejected)
        self.stats.add(other.stats)


class Writer:
    """Sends writes for one target table at a time, `max_concurrency` requests at once."""

    def __init__(self, target: Target, retrier: Retrier, max_concurrency: int = 1) -> None:
        self.target = target
        self.retrier = retrier
        self.max_concurrency = max_concurrency

    def write(self, table: str, writes: Sequence[Write]) -> WriteResult:
        """Deliver every write; return those DynamoDB can never accept."""
        chunks = [list(writes[i : i + MAX_BATCH_WRITE]) for i in range(0, len(writes), MAX_BATCH_WRITE)]
        result = WriteResult()
        if self.max_concurrency <= 1 or len(chunks) <= 1:
            parts = [self._send(table, c) for c in chunks]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(chunks))) as pool:
                parts = list(pool.map(lambda c: self._send(table, c), chunks))
        for part in parts:
            result.add(part)
        return result

    def _send(self, table: str, writes: list[Write]) -> WriteResult:
        result = WriteResult()
        last = [writes]  # what the failing attempt sent: DynamoDB took the rest already

        def send(pending: list[Write]) -> tuple[list[None], list[Write]]:
            last[0] = pending
            return [], self._batch(table, pending)

        try:
            self.retrier.drain(send, writes, f"writing to {table!r}", result.stats, "UnprocessedItems")
        except ValidationError as e:
            pending = last[0]
            if len(pending) == 1:
                reason = f"DynamoDB rejected the item: {e}"
                result.rejected.append(Rejected(pending[0].ref, reason, pending[0]))
                return result
            # One bad item fails the whole batch: bisect to find it.
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                result.add(self._send(table, part))
        return result

    def _batch(self, table: str, pending: list[Write]) -> list[Write]:
        """One BatchWriteItem; the writes DynamoDB left unprocessed."""
        unprocessed = self.target.batch_write(table, [w.request for w in pending])
        if not unprocessed:
            return []
        matched = [w for w in pending if w.request in unprocessed]
        # Should DynamoDB ever echo a request back in another form, resend
        # everything: writes are idempotent, losing one is not.
        return matched if len(matched) == len(unprocessed) else pending
