"""Which row owns which DynamoDB item.

For most tables an item's key is the row's primary key, so a gone row's item
is known from the key the trigger logged. When a key template names other
columns, an item moves when those columns change and a gone row's item cannot
be computed; when tables share a target, their rows could render one key. For
such "tracked" tables dynasync records, in _dynasync_keys, the key each row
last wrote, and plans each batch of changes (a changelog slice, a backfill
chunk) against that record:

* each row's new item claims its key; one key has one owner. A second row
  that renders a key another current row still produces becomes a dead
  letter naming that row; it is retried when either of them changes;
* a row whose key moved, or that is gone, releases its old key, and the old
  item is deleted, unless another row of the same batch claims that key (A
  takes B's old key in one transaction: A's Put overwrites it);
* the record changes are committed with the batch, after DynamoDB
  acknowledged it, so a crash in between replays the same plan.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynasync import sql
from dynasync.target import delete
from dynasync.values import key_from_text, key_text
from dynasync.writes import Rejected, RowRef, Write

if TYPE_CHECKING:
    from dynasync.tables import SyncedTable

COLLISION = "maps to the same DynamoDB item as"  # the start of a collision dead letter's reason


@dataclass
class Change:
    """One row of a batch: what it should write now, and the item it last wrote."""

    ref: RowRef
    write: Write | Rejected | None  # None: the row is gone (or filtered out) and had no item to delete
    old: str | None = None  # key_text of the item recorded for this row


@dataclass
class TargetPlan:
    """The writes one batch sends to one target, and what becomes of the rest."""

    writes: list[Write] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    settled: list[RowRef] = field(default_factory=list)  # rows needing no write
    stale: list[RowRef] = field(default_factory=list)  # other rows whose record this batch takes over
    moved: set[RowRef] = field(default_factory=set)  # rows whose Put claims a key other than their record


def plan_target(
    conn: sqlite3.Connection, target: str, changes: Sequence[Change], tables: Mapping[str, SyncedTable]
) -> TargetPlan:
    """The writes for one target: one per DynamoDB key, old items released, collisions refused."""
    plan = TargetPlan()
    in_batch = {c.ref for c in changes}
    claimed: dict[str, RowRef] = {}
    for c in changes:
        if not isinstance(c.write, Write) or not c.write.is_put:
            continue
        item = key_text(c.write.key)
        other = claimed.get(item) or _owner_elsewhere(conn, target, item, c, in_batch, tables, plan)
        if other is not None:
            c.write = Rejected(c.ref, f"{COLLISION} row {list(other.key)!r} of table {other.table!r}")
            continue
        claimed[item] = c.ref
        if item != c.old:
            plan.moved.add(c.ref)
    for c in changes:
        _place(c, claimed, plan)
    return plan


def _owner_elsewhere(
    conn: sqlite3.Connection,
    target: str,
    item: str,
    change: Change,
    in_batch: set[RowRef],
    tables: Mapping[str, SyncedTable],
    plan: TargetPlan,
) -> RowRef | None:
    """The row outside this batch that still produces `item`, if any. A
    recorded owner whose row no longer produces it is stale: its record is
    taken over."""
    if not tables[change.ref.table].tracked:
        return None
    row = conn.execute(sql.KEYS_OWNER, (target, item)).fetchone()
    if row is None:
        return None
    owner = RowRef(*row)
    if owner == change.ref or owner in in_batch:
        return None  # this row, or one whose fate this batch decides
    table = tables.get(owner.table)
    if table is None or table.current_key_text(conn, owner) == item:
        return owner  # an owner dynasync cannot check here keeps its item
    plan.stale.append(owner)
    return None


def _place(c: Change, claimed: dict[str, RowRef], plan: TargetPlan) -> None:
    """Sort one change into the plan: its Put, the Delete of its old item, or nothing."""
    if isinstance(c.write, Rejected):
        plan.rejected.append(c.write)
        return  # a row DynamoDB cannot take keeps its last item, and its record
    new = key_text(c.write.key) if c.write is not None and c.write.is_put else None
    if c.old is not None and c.old != new and c.old not in claimed:
        key = key_from_text(c.old)
        plan.writes.append(Write(c.ref, delete(key), key))
    if c.write is not None and (c.write.is_put or c.old is None):
        plan.writes.append(c.write)
    elif c.write is None and c.old is None:
        plan.settled.append(c.ref)


def record(conn: sqlite3.Connection, ref: RowRef, target: str, item: str) -> None:
    """Record that `ref` owns `item` (verify --repair). Call inside a write transaction."""
    conn.execute(sql.KEYS_RELEASE, ref)
    conn.execute(sql.KEYS_CLAIM_DROP, (target, item))
    conn.execute(sql.KEYS_CLAIM, (*ref, target, item))


def forget(conn: sqlite3.Connection, target: str, item: str) -> None:
    """Forget whoever owned an item that is gone. Call inside a write transaction."""
    conn.execute(sql.KEYS_CLAIM_DROP, (target, item))


def commit(
    conn: sqlite3.Connection,
    delivered: Iterable[Write],
    plans: Iterable[TargetPlan],
    tables: Mapping[str, SyncedTable],
) -> set[str]:
    """Record what DynamoDB acknowledged: released keys first, then claims.
    Returns the targets where a key was released. Call inside the batch's write transaction."""
    moved: set[RowRef] = set()
    for plan in plans:
        moved |= plan.moved
        for ref in plan.stale:
            conn.execute(sql.KEYS_RELEASE, ref)
    claims: list[tuple[RowRef, str, str]] = []
    released: set[str] = set()
    for w in delivered:
        table = tables.get(w.ref.table)
        if table is None or not table.tracked:
            continue
        if not w.is_put:
            conn.execute(sql.KEYS_RELEASE, w.ref)
            released.add(table.target)
        elif w.ref in moved:
            conn.execute(sql.KEYS_RELEASE, w.ref)
            claims.append((w.ref, table.target, key_text(w.key)))
    for ref, target, item in claims:
        conn.execute(sql.KEYS_CLAIM_DROP, (target, item))
        conn.execute(sql.KEYS_CLAIM, (*ref, target, item))
    return released
