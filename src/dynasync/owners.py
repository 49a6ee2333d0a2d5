"""Which row owns which DynamoDB item.

For most tables an item's key is the row's primary key, so a gone row's item
is known from the key the trigger logged. When a key template names other
columns, an item moves when those columns change and a gone row's item cannot
be computed; when tables share a target, their rows could render one key. For
such "tracked" tables dynasync records, in _dynasync_keys, every item key a
row may have written, and plans each batch of changes (a changelog slice, a
backfill chunk) against that record:

* each row's new item claims its key, and one key has one owner: a second
  row that renders a key another current row still produces becomes a dead
  letter naming that row. It is retried when an item of that target is freed;
* every other key recorded for a row is deleted from DynamoDB (the row
  moved, or is gone), unless another row of the same batch claims it (A takes
  B's old key in one transaction: A's Put overwrites it);
* a claim is recorded before its Put is sent (intend), and a key is forgotten
  only after its Delete is acknowledged (commit). So a crash anywhere leaves
  the record a superset of the items that exist, and the replay deletes them
  all, even if the row moved again meanwhile.
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
    """One row of a batch: what it should write now, and the items it may have written."""

    ref: RowRef
    write: Write | Rejected | None  # None: the row is gone (or filtered out) with no known item
    old: tuple[str, ...] = ()  # key_text of every item recorded for this row


@dataclass
class TargetPlan:
    """The writes one batch sends to one target, and what becomes of the rest."""

    target: str
    writes: list[Write] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    settled: list[RowRef] = field(default_factory=list)  # rows needing no write
    claims: dict[RowRef, str] = field(default_factory=dict)  # keys to record before the Puts go out


def plan_target(
    conn: sqlite3.Connection, target: str, changes: Sequence[Change], tables: Mapping[str, SyncedTable]
) -> TargetPlan:
    """The writes for one target: one per DynamoDB key, old items deleted, collisions refused."""
    plan = TargetPlan(target)
    in_batch = {c.ref for c in changes}
    claimed: dict[str, RowRef] = {}
    for c in changes:
        if not isinstance(c.write, Write) or not c.write.is_put:
            continue
        item = key_text(c.write.key)
        other = claimed.get(item) or _owner_elsewhere(conn, target, item, c, in_batch, tables)
        if other is not None:
            c.write = Rejected(c.ref, f"{COLLISION} row {list(other.key)!r} of table {other.table!r}")
            continue
        claimed[item] = c.ref
        if tables[c.ref.table].tracked and item not in c.old:
            plan.claims[c.ref] = item
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
) -> RowRef | None:
    """The row outside this batch that still produces `item`, if any. A
    recorded owner whose row no longer produces it is stale: the claim takes its record over."""
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
    return None


def _place(c: Change, claimed: dict[str, RowRef], plan: TargetPlan) -> None:
    """Sort one change into the plan: its Put, the Deletes of its other items, or nothing."""
    if isinstance(c.write, Rejected):
        plan.rejected.append(c.write)
        return  # a row DynamoDB cannot take keeps its last item, and its record
    new = key_text(c.write.key) if c.write is not None and c.write.is_put else None
    for old in c.old:
        if old != new and old not in claimed:
            key = key_from_text(old)
            plan.writes.append(Write(c.ref, delete(key), key))
    if c.write is not None and (c.write.is_put or not c.old):
        plan.writes.append(c.write)
    elif c.write is None and not c.old:
        plan.settled.append(c.ref)


def intend(conn: sqlite3.Connection, plans: Iterable[TargetPlan]) -> None:
    """Record the keys a batch's Puts claim, before they are sent; a claim takes
    the record of a stale owner over. Call inside a write transaction."""
    for plan in plans:
        for ref, item in plan.claims.items():
            conn.execute(sql.KEYS_CLAIM_DROP, (plan.target, item))
            conn.execute(sql.KEYS_CLAIM, (*ref, plan.target, item))


def commit(
    conn: sqlite3.Connection, delivered: Iterable[Write], tables: Mapping[str, SyncedTable]
) -> set[str]:
    """Forget the items whose Delete DynamoDB acknowledged; returns the targets
    where an item was freed. Call inside the batch's write transaction."""
    freed: set[str] = set()
    for w in delivered:
        table = tables.get(w.ref.table)
        if table is not None and table.tracked and not w.is_put:
            conn.execute(sql.KEYS_FORGET_ROW_ITEM, (*w.ref, table.target, key_text(w.key)))
            freed.add(table.target)
    return freed


def record(conn: sqlite3.Connection, ref: RowRef, target: str, item: str) -> None:
    """Record that `ref` owns `item` and nothing else (verify --repair). Call inside a write transaction."""
    conn.execute(sql.KEYS_RELEASE, ref)
    conn.execute(sql.KEYS_CLAIM_DROP, (target, item))
    conn.execute(sql.KEYS_CLAIM, (*ref, target, item))


def forget(conn: sqlite3.Connection, target: str, item: str) -> None:
    """Forget whoever owned an item that is gone. Call inside a write transaction."""
    conn.execute(sql.KEYS_CLAIM_DROP, (target, item))
