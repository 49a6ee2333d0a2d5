"""The S3 objects of oversized items (the `s3` oversize policy, dynasync.oversize):
written before the items that point to them, and deleted once no item does.

Every object is recorded in `_dynasync_objects` before it is written, and any
write to an item that has objects marks the item dirty before it is sent
(Offload.before, on the thread that starts the delivery). Between deliveries,
never while a write is in flight, `collect` reads each dirty item back from
DynamoDB (strongly consistent), deletes the objects it does not point to, and
forgets them. So:

* the object an item points to is never deleted: it was written before the
  item, and collect keeps whatever the acknowledged item points to;
* an object no item points to any more is deleted only after the write that
  replaced the pointer (or deleted the item) was acknowledged;
* a crash at any point leaves only recorded objects, which the next collect
  deletes. Objects nothing records (the database restored from an older copy)
  are found by `verify`, which lists the prefix (`sweep`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dynasync import oversize, sql
from dynasync.database import write_txn
from dynasync.exceptions import TargetError
from dynasync.retry import RequestStats, Retrier
from dynasync.target import ObjectInfo, ObjectStore, Target
from dynasync.values import Item, key_from_text, key_text
from dynasync.writes import Write

log = logging.getLogger(__name__)

DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
COLLECT_ITEMS = 100  # dirty items looked at per collect step: one BatchGetItem


def present(conn: sqlite3.Connection) -> bool:
    """Whether the database has the objects table (a database set up before it has none)."""
    return conn.execute(sql.OBJECTS_PRESENT).fetchone() is not None


class Offload:
    """The objects of one delivery: noted before it starts, written before their items."""

    def __init__(self, conn: sqlite3.Connection, store: Callable[[], ObjectStore]) -> None:
        self.conn = conn
        self._store = store
        self._targets = {t for (t,) in conn.execute(sql.OBJECTS_TARGETS)} if present(conn) else set()

    def before(self, batches: Mapping[str, Sequence[Write]]) -> None:
        """Record the objects these writes need, and mark dirty the items with
        objects they change, before anything is sent (on the caller's thread)."""
        intents: list[tuple[str, str, str, str]] = []
        touched: list[tuple[str, str]] = []
        for target, writes in batches.items():
            has_objects = target in self._targets
            for w in writes:
                if w.upload is not None:
                    intents.append((target, w.key_text, w.upload.bucket, w.upload.key))
                elif has_objects:
                    touched.append((target, w.key_text))
        if not intents and not touched:
            return
        with write_txn(self.conn):
            if intents:
                for stmt in sql.OWN_TABLE_DDL[sql.OBJECTS]:
                    self.conn.execute(stmt)
                self.conn.executemany(sql.OBJECTS_INTEND, intents)
            self.conn.executemany(sql.OBJECTS_TOUCH, touched)
        self._targets.update(t for t, *_ in intents)

    def upload(self, writes: Iterable[Write], fresh: float) -> None:
        """Write the objects of these writes not written in the last `fresh` seconds
        (on a delivery's lane, just before the request): verify's sweep spares an
        object for a grace after it was written, and the item must land within it."""
        for w in writes:
            up = w.upload
            if up is not None and (up.written is None or time.monotonic() - up.written > fresh):
                self._store().put(up.bucket, up.key, up.body, up.sha256)
                up.written = time.monotonic()


@dataclass
class Collected:
    """What a collect step did."""

    items: int = 0  # dirty items looked at
    deleted: int = 0  # objects deleted
    more: bool = False  # dirty items are left (of targets that did not fail)
    stats: RequestStats = field(default_factory=RequestStats)
    failed: dict[str, str] = field(default_factory=dict)  # target: why its objects wait for a later collect


def collect(
    conn: sqlite3.Connection,
    target: Target,
    store: Callable[[], ObjectStore],
    retrier: Retrier,
    limit: int = COLLECT_ITEMS,
    skip: Collection[str] = (),
) -> Collected:
    """Delete the objects of up to `limit` dirty items that their items no longer
    point to. Only between deliveries: a write in flight could point to one again.
    A target that fails (its table gone, S3 refusing) is reported and passed
    over, so it holds back no other target's objects; `skip` are targets already failed."""
    done = Collected()
    if not present(conn):
        return done
    for t in [t for (t,) in conn.execute(sql.OBJECTS_DIRTY_TARGETS).fetchall() if t not in skip]:
        room = limit - done.items
        if room <= 0:
            done.more = True
            break
        items = [i for (i,) in conn.execute(sql.OBJECTS_DIRTY, (t, room + 1)).fetchall()]
        done.more = len(items) > room
        try:
            held = _read_items(target, retrier, t, items[:room], done.stats)
            for item in items[:room]:
                done.deleted += _collect_item(conn, store(), retrier, t, item, held.get(item), done.stats)
                done.items += 1
        except TargetError as e:
            done.failed[t] = str(e)
    return done


def collect_all(
    conn: sqlite3.Connection, target: Target, store: Callable[[], ObjectStore], retrier: Retrier
) -> Collected:
    """collect() until no dirty item is left but those of targets that failed."""
    total = Collected()
    while True:
        done = collect(conn, target, store, retrier, skip=total.failed)
        total.items += done.items
        total.deleted += done.deleted
        total.stats.add(done.stats)
        total.failed.update(done.failed)
        if not done.more:
            return total


def holds(store: ObjectStore, retrier: Retrier, upload: oversize.Upload, stats: RequestStats) -> bool:
    """Whether S3 holds the object as written: its size, and its SHA-256 as S3
    kept it (HeadObject), or else as its body hashes."""
    where = f"s3://{upload.bucket}/{upload.key}"
    info = retrier.call(functools.partial(store.head, upload.bucket, upload.key), f"reading {where}", stats)
    if info is None or info.size != len(upload.body):
        return False
    if info.sha256 is not None:
        return info.sha256 == upload.sha256
    body = retrier.call(functools.partial(store.get, upload.bucket, upload.key), f"reading {where}", stats)
    return body is not None and hashlib.sha256(body).hexdigest() == upload.sha256


def _read_items(
    target: Target, retrier: Retrier, table: str, items: list[str], stats: RequestStats
) -> dict[str, Item]:
    """The items DynamoDB holds now for these keys (key_text), strongly consistent."""
    keys = [key_from_text(i) for i in items]
    names = tuple(keys[0])  # one table: one key schema
    found = retrier.drain(lambda batch: target.batch_get(table, batch), keys, f"reading {table!r}", stats,
                          "UnprocessedKeys")
    return {key_text({n: it[n] for n in names}): it for it in found}


def _collect_item(
    conn: sqlite3.Connection, store: ObjectStore, retrier: Retrier, table: str, item: str, held: Item | None,
    stats: RequestStats,
) -> int:
    """Delete one item's objects but the one it points to; how many were deleted."""
    p = oversize.pointer(held) if held is not None else None
    kept = (p.bucket, p.key) if p is not None else None
    stale: dict[str, list[str]] = defaultdict(list)
    for bucket, key in conn.execute(sql.OBJECTS_OF_ITEM, (table, item)).fetchall():
        if (bucket, key) != kept:
            stale[bucket].append(key)
    for bucket, keys in stale.items():
        _delete(store, retrier, bucket, keys, stats)
    with write_txn(conn):
        for bucket, keys in stale.items():
            conn.executemany(sql.OBJECTS_FORGET, [(table, item, bucket, k) for k in keys])
        if kept is not None:
            conn.execute(sql.OBJECTS_CLEAN, (table, item, *kept))
    return sum(len(k) for k in stale.values())


@dataclass
class Sweep:
    """Objects under a target's prefix that no item points to."""

    listed: int = 0
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (bucket, key)
    deleted: int = 0


def sweep(
    conn: sqlite3.Connection,
    store: ObjectStore,
    retrier: Retrier,
    location: oversize.Location,
    target: str,
    referenced: set[tuple[str, str]],
    before: float,
    repair: bool,
) -> Sweep:
    """List the objects under `{prefix}{target}/`; an orphan is one no item points
    to (`referenced`, from a scan of the whole target) that was written before
    `before` (epoch seconds: a write of another database still on its way to its
    item is younger). With `repair`, orphans are deleted and forgotten."""
    out = Sweep()
    prefix = f"{location.prefix}{target}/"
    where = f"s3://{location.bucket}/{prefix}"
    listing = retrier.call(functools.partial(_listed, store, location.bucket, prefix), f"listing {where}",
                           RequestStats())
    for o in listing:
        out.listed += 1
        if (location.bucket, o.key) not in referenced and o.modified < before:
            out.orphans.append((location.bucket, o.key))
    if repair and out.orphans:
        keys = [k for _, k in out.orphans]
        _delete(store, retrier, location.bucket, keys, RequestStats())
        if present(conn):
            with write_txn(conn):
                conn.executemany(sql.OBJECTS_FORGET_OBJECT, out.orphans)
        out.deleted = len(keys)
    return out


def _delete(store: ObjectStore, retrier: Retrier, bucket: str, keys: list[str], stats: RequestStats) -> None:
    for i in range(0, len(keys), DELETE_BATCH):
        part = keys[i : i + DELETE_BATCH]
        retrier.call(functools.partial(store.delete, bucket, part), f"deleting s3://{bucket} objects", stats)


def _listed(store: ObjectStore, bucket: str, prefix: str) -> list[ObjectInfo]:
    return list(store.list(bucket, prefix))


def grace(max_retry_time: float, request_time: float) -> float:
    """How long after its object an item write may still land: before each try
    the Writer writes again the objects max_retry_time / 2 old, which leaves the
    other half for writing the rest of the batch's objects, and the try has its deadline."""
    return max_retry_time + request_time
