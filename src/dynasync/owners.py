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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dynasync import sql
from dynasync.database import write_txn
from dynasync.tables import Chunk, SyncedTable
from dynasync.values import Item, key_from_text, key_text
from dynasync.writes import Change, DeadLetterKind, Rejected, RowRef, Write


def collision(ref: RowRef, other: RowRef, item: str) -> Rejected:
    """The dead letter of a row refused an item another row holds: it names that
    row and the item, and freeing that item retries exactly the rows it refused."""
    holder = f"row {list(other.key)!r} of table {other.table!r}"
    reason = f"maps to the same DynamoDB item as {holder}; item {item}"
    return Rejected(ref, reason, kind=DeadLetterKind.COLLISION, item=item)


@dataclass
class TargetPlan:
    """The writes one batch sends to one target, and what becomes of the rest."""

    target: str
    writes: list[Write] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    settled: list[RowRef] = field(default_factory=list)  # rows needing no write
    claims: dict[RowRef, str] = field(default_factory=dict)  # keys to record before the Puts go out
    # Items whose Delete was left out because another row's Put overwrites
    # them, with the row that held them: if DynamoDB refuses that Put, the
    # item is that row's again, and is deleted by the next pass.
    overwritten: dict[str, RowRef] = field(default_factory=dict)
    # Puts of an item the row's record already names (nothing to claim). The
    # batch before this one, planned earlier and still in flight, may be
    # deleting that item for the same row: its commit must not forget it.
    kept: dict[RowRef, str] = field(default_factory=dict)


def plan_target(
    conn: sqlite3.Connection, target: str, changes: Sequence[Change], tables: Mapping[str, SyncedTable]
) -> TargetPlan:
    """The writes for one target: one per DynamoDB key, old items deleted, collisions refused."""
    plan = TargetPlan(target)
    in_batch = {c.ref for c in changes}
    claimed: dict[str, RowRef] = {}
    collided: set[RowRef] = set()
    puts = [(c.write.key_text, c) for c in changes if isinstance(c.write, Write) and c.write.is_put]
    # A row that already owns its item claims it first: which of two rows
    # keeps an item must not depend on the order of a batch.
    puts.sort(key=lambda p: p[0] not in p[1].old)
    for item, c in puts:
        # A row whose record already names this item is its recorded owner
        # (one record per item): no other row outside the batch can hold it.
        mine = item in c.old
        other = claimed.get(item)
        if other is None and not mine:
            other = _owner_elsewhere(conn, target, item, c, in_batch, tables)
        if other is not None:
            c.write = collision(c.ref, other, item)
            collided.add(c.ref)
            continue
        claimed[item] = c.ref
        if tables[c.ref.table].tracked:
            (plan.kept if mine else plan.claims)[c.ref] = item
    texts = {c.ref: item for item, c in puts}  # a batch holds one change per row
    gone: set[str] = set()
    for c in changes:
        if _not_its_own(conn, target, c, claimed, gone):
            plan.settled.append(c.ref)
            continue
        _place(c, texts.get(c.ref), claimed, c.ref in collided, plan)
    return plan


def _not_its_own(
    conn: sqlite3.Connection, target: str, c: Change, claimed: Mapping[str, RowRef], gone: set[str]
) -> bool:
    """Whether `c` is a gone row's Delete by its primary key (no item is recorded
    for the row: it never wrote one, or was refused it) of an item that another
    row holds (recorded for it, or put by this batch) or that another such row
    of the batch deletes already. That Delete would remove the other row's item."""
    w = c.write
    if not isinstance(w, Write) or w.is_put or c.old:
        return False
    item = w.key_text
    if item in claimed or item in gone or conn.execute(sql.KEYS_OWNER, (target, item)).fetchone():
        return True
    gone.add(item)
    return False


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
    return recorded_owner(conn, target, item, tables, exclude=in_batch)


def recorded_owner(
    conn: sqlite3.Connection,
    target: str,
    item: str,
    tables: Mapping[str, SyncedTable],
    exclude: Collection[RowRef] = (),
) -> RowRef | None:
    """The row recorded as the owner of `item`, if it still produces it. An
    owner in `exclude` (a batch deciding its fate), of a table no longer
    configured, or whose row moved on, is stale: a claim takes its record over."""
    row = conn.execute(sql.KEYS_OWNER, (target, item)).fetchone()
    if row is None:
        return None
    owner = RowRef(*row)
    table = tables.get(owner.table)
    if owner in exclude or table is None or table.target != target:
        return None
    return owner if table.current_key_text(conn, owner) == item else None


def _place(c: Change, put: str | None, claimed: dict[str, RowRef], collided: bool, plan: TargetPlan) -> None:
    """Sort one change into the plan: its Put (of item `put`), the Deletes of its other items, or nothing."""
    if isinstance(c.write, Rejected):
        plan.rejected.append(c.write)
        if not collided:
            return  # a row DynamoDB cannot take keeps its last item, and its record
    new = put if isinstance(c.write, Write) and c.write.is_put else None
    for old in c.old:
        if old == new:
            continue
        if old in claimed:
            plan.overwritten[old] = c.ref
            continue
        key = key_from_text(old)
        plan.writes.append(Write.delete(c.ref, key))
    if isinstance(c.write, Write) and (c.write.is_put or not c.old):
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
    conn: sqlite3.Connection,
    plans: Iterable[TargetPlan],
    delivered: Iterable[Write],
    refused: Iterable[Rejected],
    tables: Mapping[str, SyncedTable],
    later: Iterable[TargetPlan] = (),
) -> set[tuple[str, str]]:
    """Forget the items whose Delete DynamoDB acknowledged, and give back the
    items a refused Put was to overwrite; returns the (target, item) freed.
    An item a `later` batch (planned already, sent after this one) puts again
    for the same row, trusting its record, stays recorded; an item a `later`
    batch puts again at all is not given back: that Put overwrites it, under
    the record that batch made (its claim) or trusted (the refused row's).
    Call inside the batch's write transaction."""
    freed: set[tuple[str, str]] = set()
    kept = {(p.target, ref, item) for p in later for ref, item in p.kept.items()}
    again = {(p.target, item) for p in later for item in (*p.claims.values(), *p.kept.values())}
    for w in delivered:
        table = tables.get(w.ref.table)
        if table is not None and table.tracked and not w.is_put:
            item = w.key_text
            if (table.target, w.ref, item) in kept:
                continue  # the row moved back to it: the later Put writes it again
            conn.execute(sql.KEYS_FORGET_ROW_ITEM, (*w.ref, table.target, item))
            freed.add((table.target, item))
    by_target = {p.target: p for p in plans}
    for r in refused:
        table, put = tables.get(r.ref.table), r.write
        plan = by_target.get(table.target) if table is not None else None
        if plan is None or put is None or not put.is_put:
            continue
        held = plan.overwritten.get(item := put.key_text)
        if held is not None and (plan.target, item) not in again:
            conn.execute(sql.KEYS_CLAIM_DROP, (plan.target, item))
            conn.execute(sql.KEYS_CLAIM, (*held, plan.target, item))
            conn.execute(sql.CHANGELOG_ENQUEUE, (held.table, sql.OP_UPDATE, held.k1, held.k2))
    return freed


def requeue_collisions(
    conn: sqlite3.Connection, freed: Iterable[tuple[str, str]], tables: Collection[SyncedTable]
) -> None:
    """Retry the rows refused an item that is now free. Call inside a write transaction."""
    for target, item in freed:
        for t in tables:
            if t.target == target:
                conn.execute(sql.DEAD_REQUEUE_COLLISION, (t.name, item))


def record(conn: sqlite3.Connection, ref: RowRef, target: str, item: str) -> None:
    """Record that `ref` owns `item` and nothing else (verify --repair). Call inside a write transaction."""
    conn.execute(sql.KEYS_RELEASE, ref)
    conn.execute(sql.KEYS_CLAIM_DROP, (target, item))
    conn.execute(sql.KEYS_CLAIM, (*ref, target, item))


def forget(conn: sqlite3.Connection, target: str, item: str) -> None:
    """Forget whoever owned an item that is gone. Call inside a write transaction."""
    conn.execute(sql.KEYS_CLAIM_DROP, (target, item))


def produced(
    conn: sqlite3.Connection, table: SyncedTable, key: Item, tables: Mapping[str, SyncedTable]
) -> bool:
    """Whether a current row produces this item of the table's target, asked of the
    database as it is now: its recorded owner (tracked tables), or the row itself."""
    if table.tracked:
        return recorded_owner(conn, table.target, key_text(key), tables) is not None
    return table.row_for_key(conn, key) is not None


def forget_deleted(conn: sqlite3.Connection, table: SyncedTable, deleted: Iterable[Write]) -> None:
    """Forget the items whose Deletes DynamoDB acknowledged (a tracked table's record)."""
    if not table.tracked:
        return
    with write_txn(conn):
        for w in deleted:
            forget(conn, table.target, w.key_text)


def forget_target(conn: sqlite3.Connection, table: str, target: str) -> None:
    """Forget the items a table owns in a target it no longer writes to. Call inside a write transaction."""
    conn.execute(sql.KEYS_DROP_TARGET, (table, target))


def plan_chunk(
    conn: sqlite3.Connection, table: SyncedTable, chunk: Chunk, synced: Mapping[str, SyncedTable]
) -> TargetPlan:
    """The writes of a chunk of one table's rows (a copy, a reconcile), its claims
    recorded before they go out. A table whose keys are its primary keys, alone
    on its target, needs no owners record: its rows are distinct items."""
    if not table.tracked:
        plan = TargetPlan(table.target)
        for w in table.puts(chunk):
            (plan.writes if isinstance(w, Write) else plan.rejected).append(w)  # type: ignore[arg-type]
        plan.rejected.extend(chunk.refused)
        return plan
    plan = plan_target(conn, table.target, table.chunk_changes(conn, chunk), synced)
    if plan.claims:
        with write_txn(conn):  # claims are recorded before their Puts go out
            intend(conn, [plan])
    return plan


def commit_chunk(
    conn: sqlite3.Connection,
    plan: TargetPlan,
    delivered: list[Write],
    refused: list[Rejected],
    synced: Mapping[str, SyncedTable],
) -> None:
    """Commit a chunk's item owners; retry rows refused an item it freed. Call inside a write transaction."""
    freed = commit(conn, [plan], delivered, refused, synced)
    requeue_collisions(conn, freed, synced.values())
