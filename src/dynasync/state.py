"""dynasync's own state, kept in the application's database: the high-water
mark, table shapes and reconcile flags, backfill progress and dead letters.

State only moves forward after DynamoDB acknowledged the writes, inside one
short BEGIN IMMEDIATE transaction, so a crash at any point replays instead of
skipping, and a restore from backup rewinds data and state together.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynasync import sql
from dynasync.database import write_txn
from dynasync.exceptions import OwnerError, StateError
from dynasync.values import InvalidText
from dynasync.writes import DeadLetterKind, Rejected, RowRef

HWM = "high_water_mark"
LAST_PASS = "last_pass_at"  # unix time the mark last moved
APPLIED_AT = "applied_at:"  # + table: unix time that table's changes last landed
VERSION = "schema_version"  # the layout of dynasync's tables (sql.SCHEMA_VERSION)
OWNER = "config"  # the absolute path of the one config file that syncs this database
TARGET = "target:"  # + DynamoDB table: its identity when dynasync last checked it
TARGET_MISSING = "target_missing:"  # + DynamoDB table: unix time it was first found missing
FAILING = "failing"  # why the daemon's turns on this database fail (JSON); gone once one succeeds
GENERATION = "generation"  # the database's random id, which travels with the file (dynasync.identity)
IDENTITY_CHANGE = "identity_change"  # when and why the file was found not to be the one synced last (JSON)
AUDIT = "audit"  # where the continuous verification's cycle is (JSON)
AUDIT_CYCLE = "audit_cycle_ended_at"  # unix time its last full cycle ended
SET_ASIDE = "set_aside:"  # + table: why the table cannot be synced now (its mapping does not fit it)


@dataclass(frozen=True)
class DeadLetter:
    """A row DynamoDB refused, as stored."""

    table: str
    k1: object
    k2: object
    reason: str
    seq: int | None
    first_failed: float
    last_failed: float
    attempts: int
    kind: DeadLetterKind = DeadLetterKind.UNSTORABLE
    width: int = 0  # columns in the table's key; 0 when unknown

    @property
    def key(self) -> tuple[object, ...]:
        """The key values, one per key column (a NULL second column included)."""
        width = self.width or (1 if self.k2 is None else 2)
        return (self.k1, self.k2)[:width]


@dataclass(frozen=True)
class Failure:
    """Why the daemon's turns on a database fail, since when, and how many times."""

    error: str
    since: float
    attempts: int


@dataclass(frozen=True)
class BackfillProgress:
    """How far one table's backfill got: the last key copied, rows copied, finished or not."""

    table: str
    last: RowRef | None  # None: nothing copied yet
    rows: int
    done: bool


def installed_tables(conn: sqlite3.Connection) -> set[str]:
    """Which of dynasync's own tables exist."""
    return {r[0] for r in conn.execute(sql.OWN_TABLES_PRESENT)}


def require_installed(conn: sqlite3.Connection) -> None:
    """StateError, with what to run, unless dynasync's tables are all there in a layout it reads."""
    present = installed_tables(conn)
    missing = [t for t in sql.OWN_TABLES if t not in present]
    if len(missing) == len(sql.OWN_TABLES):
        raise StateError("dynasync is not installed in this database: run 'dynasync init' first")
    if missing:
        raise StateError(
            f"dynasync's state tables are damaged ({', '.join(missing)} missing): run 'dynasync init' "
            "to recreate them, then 'dynasync backfill' and 'dynasync verify --repair'"
        )
    check_version(conn)


def check_version(conn: sqlite3.Connection) -> None:
    """StateError unless dynasync's tables have the layout this release reads;
    the layout an earlier release wrote is upgraded first."""
    row = conn.execute(sql.STATE_GET, (VERSION,)).fetchone()
    if row is not None and str(row[0]) == "1":
        if conn.in_transaction:
            _upgrade_to_2(conn)
        else:
            with write_txn(conn):
                _upgrade_to_2(conn)
        return
    if row is not None and str(row[0]) != sql.SCHEMA_VERSION:
        raise StateError(
            f"dynasync's state in this database has layout version {row[0]!r}, but this dynasync "
            f"reads version {sql.SCHEMA_VERSION}: use the dynasync release that installed it"
        )


def _upgrade_to_2(conn: sqlite3.Connection) -> None:
    """Layout 1 to 2: each dead letter's kind in a column. The dead letters written
    before it are the only ones whose kind is read out of their reason's text."""
    if str(conn.execute(sql.STATE_GET, (VERSION,)).fetchone()[0]) != "1":
        return  # another process upgraded it meanwhile
    for stmt in sql.UPGRADE_TO_2:
        conn.execute(stmt)
    for rowid, reason in conn.execute(sql.DEAD_OLD_REASONS).fetchall():
        kind, item = _old_kind(str(reason))
        conn.execute(sql.DEAD_SET_KIND, (kind.value, item, rowid))
    conn.execute(sql.STATE_SET, (VERSION, sql.SCHEMA_VERSION))


def _old_kind(reason: str) -> tuple[DeadLetterKind, str | None]:
    """The kind (and a collision's item) of a dead letter layout 1 wrote, from its reason."""
    if reason.startswith("maps to the same DynamoDB item as"):
        # The item is the JSON after the first "; item " that leaves one (a key value may hold the text).
        at = reason.find("; item ")
        while at >= 0:
            try:
                json.loads(reason[at + 7 :])
                return DeadLetterKind.COLLISION, reason[at + 7 :]
            except ValueError:
                at = reason.find("; item ", at + 1)
        return DeadLetterKind.COLLISION, None
    prefixes = {"DynamoDB rejected the item": DeadLetterKind.REFUSED,
                "the row filter fails on this row": DeadLetterKind.FILTER,
                "a key column is NULL": DeadLetterKind.NULL_KEY}
    return next((k for p, k in prefixes.items() if reason.startswith(p)), DeadLetterKind.UNSTORABLE), None


def _config_id(path: Path | None) -> str:
    # Absolute, but not resolved: a deploy that moves a `current` symlink keeps its identity.
    return os.path.abspath(path) if path is not None else ""


def check_owner(conn: sqlite3.Connection, config_path: Path | None, taking_over: bool = False) -> None:
    """One config per database: StateError when another config file syncs it.

    Two configs on one database would share one changelog and one mark, and
    each pass would move the mark past the other's changes. A config file that
    no longer exists (moved or replaced) is taken over by the next `init`.
    """
    row = conn.execute(sql.STATE_GET, (OWNER,)).fetchone()
    mine = _config_id(config_path)
    if row is None or not row[0] or not mine or row[0] == mine:
        return
    if not Path(row[0]).exists():
        if taking_over:
            return
        raise OwnerError(
            f"this database was set up by the config {row[0]}, which no longer exists: run 'dynasync init' "
            "with this config to take it over"
        )
    raise OwnerError(
        f"this database is already synced by another config, {row[0]}: one config per database, so put "
        "these [[tables]] into that config (two would skip each other's changes); if this config "
        "replaces that one, run 'dynasync init --takeover' with it"
    )


def claim_owner(conn: sqlite3.Connection, config_path: Path | None, takeover: bool = False) -> None:
    """Record this config as the database's one config (`init`). Call inside a
    write transaction, after check_owner; a config that no longer exists, or
    with `takeover` any other, is replaced."""
    row = conn.execute(sql.STATE_GET, (OWNER,)).fetchone()
    if row is None or not row[0] or not Path(row[0]).exists() or takeover:
        conn.execute(sql.STATE_SET, (OWNER, _config_id(config_path)))


def high_water_mark(conn: sqlite3.Connection) -> int:
    """The seq up to which every change has been applied."""
    row = conn.execute(sql.STATE_GET, (HWM,)).fetchone()
    if row is None:
        raise StateError("the high-water mark is missing: run 'dynasync init' to repair the state")
    value = row[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(
            f"the high-water mark is garbled ({value!r}): run 'dynasync backfill' to resynchronise"
        )
    return value


def check_position(conn: sqlite3.Connection, hwm: int) -> None:
    """The changelog must still hold the tagged row at the mark (see CHANGELOG_PRUNE).
    Without it SQLite may hand out sequence numbers at or below the mark, and
    those changes would be skipped silently."""
    if hwm == 0 or conn.execute(sql.CHANGELOG_HAS_MARK, (hwm,)).fetchone():
        return
    (last,) = conn.execute(sql.CHANGELOG_MAX).fetchone()
    raise StateError(
        f"the state is ahead of the changelog (high-water mark {hwm}, changelog ends at {last or 0}): "
        "the changelog was emptied or replaced behind dynasync's back. Run 'dynasync backfill' to "
        "resynchronise every table, then 'dynasync verify --repair'"
    )


def reset_position(conn: sqlite3.Connection) -> int:
    """Make the mark the changelog's current end (used by a full backfill,
    which copies every row's current state anyway)."""
    with write_txn(conn):
        (last,) = conn.execute(sql.CHANGELOG_MAX).fetchone()
        last = last or 0
        conn.execute(sql.CHANGELOG_PRUNE, (last,))
        conn.execute(sql.CHANGELOG_MARK, (last,))
        conn.execute(sql.STATE_SET, (HWM, last))
    return int(last)


def commit_pass(
    conn: sqlite3.Connection,
    high: int,
    rejected: Sequence[Rejected],
    delivered: Iterable[RowRef],
    tables: Iterable[str] = (),
    records: Callable[[sqlite3.Connection], object] | None = None,
) -> None:
    """Advance the mark to `high`, prune the applied changelog rows, update
    the item owners (`records`) and dead letters, and date the progress of
    `tables`, all at once."""
    now = time.time()
    with write_txn(conn):
        conn.execute(sql.STATE_SET, (HWM, high))
        conn.execute(sql.STATE_SET, (LAST_PASS, now))
        for table in tables:
            conn.execute(sql.STATE_SET, (APPLIED_AT + table, now))
        conn.execute(sql.CHANGELOG_PRUNE, (high,))
        conn.execute(sql.CHANGELOG_MARK, (high,))
        if records is not None:
            records(conn)
        record_dead_letters(conn, rejected, high, delivered)


def record_dead_letters(
    conn: sqlite3.Connection,
    rejected: Sequence[Rejected],
    seq: int | None,
    delivered: Iterable[RowRef] = (),
) -> None:
    """Store new dead letters and clear those of delivered rows; call inside a write transaction."""
    if conn.execute(sql.DEAD_ANY).fetchone():  # not a count: a slice's commit never walks them all
        conn.executemany(sql.DEAD_DELETE, (_key_args(ref) for ref in delivered))
    now = time.time()
    for r in rejected:
        key = _key_args(r.ref)
        old = conn.execute(sql.DEAD_FIND, key).fetchone()
        attempts, first = (old[0] + 1, old[1]) if old else (1, now)
        conn.execute(sql.DEAD_DELETE, key)
        conn.execute(sql.DEAD_INSERT, (*key, r.reason, seq, first, now, attempts, r.kind.value, r.item))


def _key_args(ref: RowRef) -> tuple[object, ...]:
    """A key's parameters for sql._K1/_K2: TEXT that is not UTF-8 stays TEXT."""
    return (*ref, isinstance(ref.k1, InvalidText), isinstance(ref.k2, InvalidText))


def _shape_key(table: str) -> str:
    return f"shape:{table}"


def stored_shape(conn: sqlite3.Connection, table: str) -> list[list[Any]] | None:
    """A table's shape as last saved, or None."""
    row = conn.execute(sql.STATE_GET, (_shape_key(table),)).fetchone()
    if row is None:
        return None
    try:
        value = json.loads(row[0])
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, list) else None


def save_shapes(
    conn: sqlite3.Connection, shapes: Mapping[str, Sequence[Sequence[Any]]], overwrite: bool = True
) -> None:
    """Call inside a write transaction. Without overwrite, only tables seen for
    the first time are recorded, so a reshape stays visible to the next pass."""
    stmt = sql.STATE_SET if overwrite else sql.STATE_INIT
    for table, shape in shapes.items():
        conn.execute(stmt, (_shape_key(table), json.dumps([list(c) for c in shape])))


def _mapping_key(table: str) -> str:
    return f"mapping:{table}"


def stored_mapping(conn: sqlite3.Connection, table: str) -> dict[str, Any] | None:
    """The mapping a table's items were last reconciled under (SyncedTable.mapping), or None."""
    row = conn.execute(sql.STATE_GET, (_mapping_key(table),)).fetchone()
    try:
        value = json.loads(row[0]) if row else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def save_mapping(conn: sqlite3.Connection, table: str, mapping: Mapping[str, Any]) -> None:
    """Call inside a write transaction: the table's items now follow this mapping."""
    conn.execute(sql.STATE_SET, (_mapping_key(table), json.dumps(mapping)))


def backfilled(conn: sqlite3.Connection, table: str) -> bool:
    """Whether a backfill of the table has finished."""
    p = backfill_progress(conn).get(table)
    return p is not None and p.done


def has_owners(conn: sqlite3.Connection, table: str) -> bool:
    """Whether any row of the table has an item recorded (dynasync.owners)."""
    return bool(conn.execute(sql.KEYS_ANY, (table,)).fetchone())


def _reconcile_key(table: str) -> str:
    return f"reconcile:{table}"


ROWS, ITEMS = "rows", "items"  # a reconcile's phases: the table's rows, then the target's items


@dataclass
class ReconcileJob:
    """One table's reconcile as far as it got (dynasync.reconcile): its phase, its
    cursor in that phase, the mappings its items may still follow, and its counts."""

    table: str
    phase: str = ROWS
    after: RowRef | None = None  # rows: the last row done
    start: str | None = None  # items: the key (key_text) the scan goes on after
    previous: list[dict[str, Any]] = field(default_factory=list)  # Ownership.to_json() of earlier mappings
    rows: int = 0
    written: int = 0
    items: int = 0
    deleted: int = 0

    def to_json(self) -> str:
        """As the state keeps it."""
        doc = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("table", "after")}
        doc["after"] = None if self.after is None else [_tagged(self.after.k1), _tagged(self.after.k2)]
        return json.dumps(doc)

    @classmethod
    def from_json(cls, table: str, text: object) -> ReconcileJob:
        """What to_json wrote; anything else (a bare flag, a damaged value) is a job from the start."""
        try:
            doc = json.loads(str(text))
            after = doc.pop("after", None)
            job = cls(table, **doc)
            if after is not None:
                job.after = RowRef(table, _untagged(after[0]), _untagged(after[1]))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            return cls(table)
        return job


def _tagged(value: Any) -> Any:
    """A key value as JSON, keeping its SQLite type (BLOB, TEXT that is not UTF-8, REAL, ...)."""
    if isinstance(value, InvalidText):
        return {"text": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, bytes):
        return {"blob": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float):
        return {"real": repr(value)}
    return value


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        ((kind, text),) = value.items()
        if kind == "real":
            return float(text)
        raw = base64.b64decode(text)
        return InvalidText(raw) if kind == "text" else raw
    return value


def flag_reconcile(conn: sqlite3.Connection, tables: Iterable[str]) -> None:
    """Call inside a write transaction: these tables changed without capture
    seeing it, so their reconcile starts (again) from the beginning, keeping the
    earlier mappings it knew of. The job outlives a failed or interrupted reconcile."""
    for table in tables:
        start_reconcile(conn, table)


def start_reconcile(conn: sqlite3.Connection, table: str, previous: dict[str, Any] | None = None) -> None:
    """(Re)start a table's reconcile from its first row; `previous`: a mapping
    its items may follow (the config changed it). Call inside a write transaction."""
    found = reconcile_job(conn, table)
    kept = found.previous if found is not None else []
    if previous is not None and previous not in kept:
        kept = [*kept, previous]
    conn.execute(sql.STATE_SET, (_reconcile_key(table), ReconcileJob(table, previous=kept).to_json()))


def reconcile_job(conn: sqlite3.Connection, table: str) -> ReconcileJob | None:
    """A table's reconcile as far as it got, or None when it owes none."""
    row = conn.execute(sql.STATE_GET, (_reconcile_key(table),)).fetchone()
    return ReconcileJob.from_json(table, row[0]) if row else None


def save_reconcile_job(conn: sqlite3.Connection, job: ReconcileJob) -> None:
    """Keep a reconcile's progress. Call inside a write transaction."""
    conn.execute(sql.STATE_SET, (_reconcile_key(job.table), job.to_json()))


def flagged_for_reconcile(conn: sqlite3.Connection, tables: Iterable[str]) -> list[str]:
    """Which of these tables still owe a reconcile."""
    return [t for t in tables if conn.execute(sql.STATE_GET, (_reconcile_key(t),)).fetchone()]



def clear_reconcile(conn: sqlite3.Connection, tables: Iterable[str]) -> None:
    """Call inside a write transaction."""
    for table in tables:
        conn.execute(sql.STATE_DELETE, (_reconcile_key(table),))


def record_targets(
    conn: sqlite3.Connection, identities: Mapping[str, str], sources: Mapping[str, Sequence[str]]
) -> list[str]:
    """Remember which DynamoDB table each target is. A target that is not the
    table dynasync wrote before (deleted and created again, or restored), or
    one that was seen missing, lost its items: flag its source tables for
    reconciling, which restores them. Returns those tables. Call inside a
    write transaction."""
    missing = missing_targets(conn)
    restore: list[str] = []
    for target, identity in identities.items():
        row = conn.execute(sql.STATE_GET, (TARGET + target,)).fetchone()
        if (row is not None and row[0] != identity) or target in missing:
            restore.extend(sources.get(target, ()))
        conn.execute(sql.STATE_SET, (TARGET + target, identity))
        conn.execute(sql.STATE_DELETE, (TARGET_MISSING + target,))
    flag_reconcile(conn, restore)
    return restore


def mark_target_missing(conn: sqlite3.Connection, target: str) -> None:
    """Note that a target table was found missing (kept from the first time seen)."""
    with write_txn(conn):
        conn.execute(sql.STATE_INIT, (TARGET_MISSING + target, time.time()))


def missing_targets(conn: sqlite3.Connection) -> dict[str, float]:
    """Target tables last seen missing, with when that was first noticed."""
    return {name: float(value) for name, value in conn.execute(sql.STATE_PREFIXED, (TARGET_MISSING,))}


def generation(conn: sqlite3.Connection) -> str:
    """The database's generation (dynasync.identity), made the first time it is asked for."""
    row = conn.execute(sql.STATE_GET, (GENERATION,)).fetchone()
    if row is not None and row[0]:
        return str(row[0])
    with write_txn(conn):
        made = uuid.uuid4().hex
        conn.execute(sql.STATE_INIT, (GENERATION, made))
        return str(conn.execute(sql.STATE_GET, (GENERATION,)).fetchone()[0])


def record_identity_change(conn: sqlite3.Connection, why: str) -> None:
    """Keep when and why the database was found not to be the one synced last. Call inside a write txn."""
    conn.execute(sql.STATE_SET, (IDENTITY_CHANGE, json.dumps({"why": why, "at": time.time()})))


def identity_change(conn: sqlite3.Connection) -> tuple[str, float] | None:
    """The last time the database was found not to be the one synced last, and why."""
    row = conn.execute(sql.STATE_GET, (IDENTITY_CHANGE,)).fetchone()
    try:
        doc = json.loads(row[0]) if row else None
        return (str(doc["why"]), float(doc["at"])) if doc else None
    except (TypeError, ValueError, KeyError):
        return None


def audit_place(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """Where the continuous verification's cycle is (dynasync.audit), if it started."""
    row = conn.execute(sql.STATE_GET, (AUDIT,)).fetchone()
    try:
        doc = json.loads(row[0]) if row else None
    except (TypeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def save_audit_place(conn: sqlite3.Connection, place: dict[str, Any], cycle_ended: bool) -> None:
    """Keep the cycle's place, and when a full cycle ended. Call inside a write transaction."""
    conn.execute(sql.STATE_SET, (AUDIT, json.dumps(place)))
    if cycle_ended:
        conn.execute(sql.STATE_SET, (AUDIT_CYCLE, time.time()))


def record_failure(conn: sqlite3.Connection, error: str | None, attempts: int) -> None:
    """Keep why the daemon's turns fail (None: they succeed again). Call inside a write transaction."""
    if error is None:
        conn.execute(sql.STATE_DELETE, (FAILING,))
        return
    since = time.time()
    found = failure(conn)
    if found is not None:
        since = found.since
    conn.execute(sql.STATE_SET, (FAILING, json.dumps({"error": error, "since": since, "attempts": attempts})))


def failure(conn: sqlite3.Connection) -> Failure | None:
    """Why the daemon's turns on this database fail, if they do."""
    row = conn.execute(sql.STATE_GET, (FAILING,)).fetchone()
    try:
        doc = json.loads(row[0]) if row else None
        return Failure(str(doc["error"]), float(doc["since"]), int(doc["attempts"])) if doc else None
    except (TypeError, ValueError, KeyError):
        return None


def record_set_aside(conn: sqlite3.Connection, failed: Mapping[str, str]) -> None:
    """Keep which tables are set aside, and why (the others are back). Call inside a write transaction."""
    for name in set(set_aside(conn)) - set(failed):
        conn.execute(sql.STATE_DELETE, (SET_ASIDE + name,))
    for name, reason in failed.items():
        conn.execute(sql.STATE_SET, (SET_ASIDE + name, reason))


def set_aside(conn: sqlite3.Connection) -> dict[str, str]:
    """The tables set aside, and why."""
    return {name: str(reason) for name, reason in conn.execute(sql.STATE_PREFIXED, (SET_ASIDE,))}


def timestamp(conn: sqlite3.Connection, name: str) -> float | None:
    """A unix time stored in the state (LAST_PASS, APPLIED_AT + table)."""
    row = conn.execute(sql.STATE_GET, (name,)).fetchone()
    return float(row[0]) if row and isinstance(row[0], int | float) else None


def backfill_progress(conn: sqlite3.Connection) -> dict[str, BackfillProgress]:
    """Every table's backfill progress, by table."""
    out = {}
    for table, k1, k2, started, rows, done in conn.execute(sql.BACKFILL_GET):
        last = RowRef(table, k1, k2) if started else None
        out[table] = BackfillProgress(table, last, int(rows), bool(done))
    return out


def start_backfill(conn: sqlite3.Connection, tables: Iterable[str]) -> None:
    """Start these tables' backfills from the beginning."""
    with write_txn(conn):
        for table in tables:
            conn.execute(sql.BACKFILL_START, (table,))


def save_backfill_chunk(
    conn: sqlite3.Connection,
    last: RowRef,
    rows: int,
    rejected: Sequence[Rejected],
    records: Callable[[sqlite3.Connection], object] | None = None,
) -> None:
    """Record an acknowledged chunk: the last key copied, the item owners
    (`records`), and its dead letters."""
    with write_txn(conn):
        conn.execute(sql.BACKFILL_PROGRESS, (last.k1, last.k2, rows, last.table))
        if records is not None:
            records(conn)
        record_dead_letters(conn, rejected, None)


def finish_backfill(conn: sqlite3.Connection, table: str, rejected: Sequence[Rejected]) -> None:
    """Mark a table's backfill done, with the dead letters found at the end."""
    with write_txn(conn):
        record_dead_letters(conn, rejected, None)
        conn.execute(sql.BACKFILL_DONE, (table,))


def forget_dead_letters(conn: sqlite3.Connection, tables: Iterable[str]) -> None:
    """Drop the dead letters of tables no longer synced. Call inside a write transaction."""
    for table in tables:
        conn.execute(sql.DEAD_DELETE_TABLE, (table,))


def dead_letter_count(conn: sqlite3.Connection) -> int:
    """How many dead letters there are."""
    return int(conn.execute(sql.DEAD_COUNT).fetchone()[0])


def dead_letters(conn: sqlite3.Connection) -> list[DeadLetter]:
    """Every dead letter, by table."""
    return [
        DeadLetter(table, k1, k2, reason, seq, first, last, attempts, _kind(str(kind)))
        for table, k1, k2, reason, seq, first, last, attempts, kind in conn.execute(sql.DEAD_LIST)
    ]


def _kind(value: str) -> DeadLetterKind:
    try:
        return DeadLetterKind(value)
    except ValueError:  # written by a newer release: the reason still says why
        return DeadLetterKind.UNSTORABLE


def requeue_dead_letters(conn: sqlite3.Connection, table: str | None = None) -> int:
    """Log every dead letter's key again so the next pass retries it."""
    with write_txn(conn):
        return conn.execute(sql.DEAD_REQUEUE, (table,)).rowcount
