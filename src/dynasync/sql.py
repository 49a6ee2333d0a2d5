"""Every piece of SQL text dynasync runs: its own tables, the capture triggers
and the queries over both. Identifiers from the config or the schema only ever
reach SQL through quote_ident / quote_literal.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "_dynasync_"
CHANGELOG = "_dynasync_changelog"
STATE = "_dynasync_state"
BACKFILL = "_dynasync_backfill"
DEAD_LETTERS = "_dynasync_dead_letters"
KEYS = "_dynasync_keys"
OBJECTS = "_dynasync_objects"
OWN_TABLES = (CHANGELOG, STATE, BACKFILL, DEAD_LETTERS)  # a pass needs these; init adds KEYS too
SCHEMA_VERSION = "2"

# Op codes written by the triggers, for people reading the changelog: what a
# pass writes is decided by whether the row exists when the slice is read.
OP_INSERT, OP_UPDATE, OP_OLD_KEY, OP_DELETE, OP_REPLACED = "I", "U", "K", "D", "R"
OP_MARK = "M"  # an applied row kept at the high-water mark


def quote_ident(name: str) -> str:
    """An identifier as SQL text, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string literal as SQL text."""
    return "'" + value.replace("'", "''") + "'"


# A collision dead letter is found by the item it was refused, when that item is freed.
DEAD_ITEM_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {PREFIX}dead_letters_item ON {DEAD_LETTERS} (tbl, item) "
    "WHERE item IS NOT NULL"
)
# Layout 1 to 2: a dead letter's kind (and a collision's item) in columns of their own.
UPGRADE_TO_2 = (
    f"ALTER TABLE {DEAD_LETTERS} ADD COLUMN kind TEXT NOT NULL DEFAULT 'unstorable'",
    f"ALTER TABLE {DEAD_LETTERS} ADD COLUMN item TEXT",
    DEAD_ITEM_INDEX,
)
DEAD_OLD_REASONS = f"SELECT rowid, reason FROM {DEAD_LETTERS}"
DEAD_SET_KIND = f"UPDATE {DEAD_LETTERS} SET kind = ?, item = ? WHERE rowid = ?"

# seq is a plain INTEGER PRIMARY KEY (cheaper per row than AUTOINCREMENT). It
# never goes back because a pass keeps the row at the high-water mark when it
# prunes: max(seq) therefore never drops below the mark.
OWN_TABLE_DDL: dict[str, tuple[str, ...]] = {
    CHANGELOG: (
        f"CREATE TABLE IF NOT EXISTS {CHANGELOG} (\n"
        "  seq INTEGER PRIMARY KEY,\n"
        "  tbl TEXT NOT NULL,\n"
        "  op TEXT NOT NULL,\n"
        "  k1,\n"
        "  k2\n"
        ")",
    ),
    STATE: (f"CREATE TABLE IF NOT EXISTS {STATE} (name TEXT PRIMARY KEY, value)",),
    BACKFILL: (
        f"CREATE TABLE IF NOT EXISTS {BACKFILL} (\n"
        "  tbl TEXT PRIMARY KEY,\n"
        "  k1,\n"
        "  k2,\n"
        "  started INTEGER NOT NULL DEFAULT 0,\n"
        "  rows INTEGER NOT NULL DEFAULT 0,\n"
        "  done INTEGER NOT NULL DEFAULT 0\n"
        ")",
    ),
    DEAD_LETTERS: (
        f"CREATE TABLE IF NOT EXISTS {DEAD_LETTERS} (\n"
        "  tbl TEXT NOT NULL,\n"
        "  k1,\n"
        "  k2,\n"
        "  reason TEXT NOT NULL,\n"
        "  seq INTEGER,\n"
        "  first_failed REAL NOT NULL,\n"
        "  last_failed REAL NOT NULL,\n"
        "  attempts INTEGER NOT NULL DEFAULT 1,\n"
        "  kind TEXT NOT NULL DEFAULT 'unstorable',\n"
        "  item TEXT\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {PREFIX}dead_letters_key ON {DEAD_LETTERS} (tbl, k1, k2)",
        DEAD_ITEM_INDEX,
    ),
    # The DynamoDB key each row of a key-templated (or target-sharing) table
    # last wrote: a row whose key moved, or that is gone, still finds its old
    # item, and two rows can never claim one item. `item` is values.key_text().
    KEYS: (
        f"CREATE TABLE IF NOT EXISTS {KEYS} (\n"
        "  tbl TEXT NOT NULL,\n"
        "  k1,\n"
        "  k2,\n"
        "  target TEXT NOT NULL,\n"
        "  item TEXT NOT NULL\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {PREFIX}keys_row ON {KEYS} (tbl, k1, k2)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {PREFIX}keys_item ON {KEYS} (target, item)",
    ),
    # The S3 objects an oversized item may point to (dynasync.objects): recorded
    # before the object is written, `dirty` when the item was written since, and
    # forgotten once the object is deleted because the item no longer points to it.
    OBJECTS: (
        f"CREATE TABLE IF NOT EXISTS {OBJECTS} (\n"
        "  target TEXT NOT NULL,\n"
        "  item TEXT NOT NULL,\n"
        "  bucket TEXT NOT NULL,\n"
        "  object TEXT NOT NULL,\n"
        "  dirty INTEGER NOT NULL DEFAULT 1,\n"
        "  PRIMARY KEY (target, item, bucket, object)\n"
        ") WITHOUT ROWID",
        f"CREATE INDEX IF NOT EXISTS {PREFIX}objects_dirty ON {OBJECTS} (target, item) WHERE dirty",
    ),
}
CREATE_OWN_TABLES = tuple(stmt for stmts in OWN_TABLE_DDL.values() for stmt in stmts)

DROP_OWN_TABLES = tuple(f"DROP TABLE IF EXISTS {t}" for t in OWN_TABLE_DDL)


@dataclass(frozen=True)
class Term:
    """One indexed term of a uniqueness constraint."""

    sql: str  # over the table's columns: a quoted column, the rowid, or an expression
    column: str | None  # the column it names; None for an expression
    collation: str
    kind: str = "column"  # "column", "generated", "rowid" or "expression"
    uses: tuple[str, ...] = ()  # the columns an expression refers to


@dataclass(frozen=True)
class Conflict:
    """A uniqueness constraint through which a REPLACE can delete another row."""

    name: str  # the index, "PRIMARY KEY" or "rowid"
    terms: tuple[Term, ...]
    where: str | None = None  # a partial index's condition
    where_uses: tuple[str, ...] = ()  # the columns the condition refers to


@dataclass(frozen=True)
class TriggerSpec:
    """What the trigger generator needs to know about one table."""

    table: str
    key: tuple[str, ...]
    conflicts: tuple[Conflict, ...] = ()
    rowid_key: bool = False  # the key is the rowid: UPDATE ... SET rowid changes it


def trigger_name(kind: str, table: str) -> str:
    """The name of one of a table's capture triggers ("ins", "upd", "key", "del", "rep", "repu")."""
    return f"{PREFIX}{kind}_{table}"


def collate(name: str) -> str:
    """A COLLATE clause; the built-in collations unquoted, as SQLite prints them."""
    return f"COLLATE {name.upper() if name.upper() in ('BINARY', 'NOCASE', 'RTRIM') else quote_ident(name)}"


def _log(spec: TriggerSpec, op: str, row: str) -> str:
    keys = [f"{row}.{quote_ident(c)}" for c in spec.key] + ["NULL"] * (2 - len(spec.key))
    return (
        f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) "
        f"VALUES ({quote_literal(spec.table)}, '{op}', {', '.join(keys)});"
    )


def _over_new(expression: str, uses: Sequence[str]) -> str:
    """An expression over the table's columns, evaluated on NEW's values. Only
    the columns it uses are named, so the trigger never stops a DROP COLUMN of another."""
    if not uses:
        return f"(SELECT {expression})"
    values = ", ".join(f"NEW.{quote_ident(c)} AS {quote_ident(c)}" for c in uses)
    return f"(SELECT {expression} FROM (SELECT {values}))"


def _new_value(c: Conflict, term: Term) -> str:
    """A term evaluated on the row being written (NEW)."""
    if term.kind != "expression":
        return f"NEW.{term.sql if term.kind == 'rowid' else quote_ident(term.column or '')}"
    # The same SQL as the index's, so the index serves the lookup.
    value = _over_new(term.sql, term.uses)
    if c.where:
        # SQLite evaluates a partial index's expression only for rows it covers:
        # so must the trigger, or an expression that fails elsewhere fails the write.
        return f"(CASE WHEN {_over_new(f'({c.where})', c.where_uses)} THEN {value} END)"
    return value


def _changed(term: Term) -> str | None:
    """Whether an UPDATE changes a term; None when it cannot be told cheaply (an expression)."""
    if term.kind == "expression":
        return None
    name = term.sql if term.kind == "rowid" else quote_ident(term.column or "")
    return f"OLD.{name} IS NOT NEW.{name} COLLATE BINARY"


def _update_guard(conflict: Conflict) -> str | None:
    changes = [_changed(t) for t in conflict.terms]
    return None if None in changes else " OR ".join(c for c in changes if c)


def _log_victims(spec: TriggerSpec, c: Conflict, guard: str | None = None) -> str:
    """Log the rows a REPLACE is about to delete through one constraint.

    SQLite fires no DELETE trigger for them unless recursive_triggers is on.
    The match compares each term as the index does (its collation, its
    partial condition), so the index serves the lookup. Over-logging is
    harmless, as the pass reads each logged key's current state, so the row
    being written is not excluded: its key is not known in a BEFORE INSERT
    (an INTEGER PRIMARY KEY about to be assigned reads as -1).
    """
    keys = [quote_ident(k) for k in spec.key] + ["NULL"] * (2 - len(spec.key))
    match = [f"{t.sql} = {_new_value(c, t)} {collate(t.collation)}" for t in c.terms]
    if c.where:
        match.append(f"({c.where})")
    if guard:
        match.insert(0, f"({guard})")
    return (
        f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) "
        f"SELECT {quote_literal(spec.table)}, '{OP_REPLACED}', {', '.join(keys)} "
        f"FROM {quote_ident(spec.table)} WHERE {' AND '.join(match)};"
    )


def _victim_triggers(spec: TriggerSpec) -> dict[str, str]:
    t = quote_ident(spec.table)
    on_insert = " ".join(_log_victims(spec, c) for c in spec.conflicts)
    guards = [_update_guard(c) for c in spec.conflicts]
    on_update = " ".join(_log_victims(spec, c, g) for c, g in zip(spec.conflicts, guards, strict=True))
    plain = all(term.kind == "column" for c in spec.conflicts for term in c.terms)
    if plain:  # cheapest: SQLite runs the trigger only when the SET list names these columns
        cols = sorted({term.column or "" for c in spec.conflicts for term in c.terms})
        when = f"OF {', '.join(quote_ident(c) for c in cols)} ON {t}"
    elif None in guards:
        when = f"ON {t}"
    else:
        when = f"ON {t} WHEN {' OR '.join(g for g in guards if g)}"
    return {
        trigger_name("rep", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('rep', spec.table))} BEFORE INSERT ON {t} "
            f"BEGIN {on_insert} END"
        ),
        trigger_name("repu", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('repu', spec.table))} BEFORE UPDATE {when} "
            f"BEGIN {on_update} END"
        ),
    }


def trigger_sql(spec: TriggerSpec) -> dict[str, str]:
    """The capture triggers of one table, by trigger name.

    They log only the key, and call no SQL function unless an index
    expression does, so they stay cheap and work with trusted_schema=OFF.
    Key comparisons are exact (BINARY), as DynamoDB compares keys, whatever
    the columns' own collation.
    """
    if not 1 <= len(spec.key) <= 2:
        raise ValueError("a key has one or two columns")
    t = quote_ident(spec.table)
    key_cols = ", ".join(quote_ident(c) for c in spec.key)
    key_changed = " OR ".join(
        f"OLD.{quote_ident(c)} IS NOT NEW.{quote_ident(c)} COLLATE BINARY" for c in spec.key
    )
    # UPDATE ... SET rowid = ... changes an INTEGER PRIMARY KEY without naming it.
    key_update = f"UPDATE ON {t}" if spec.rowid_key else f"UPDATE OF {key_cols} ON {t}"
    triggers = {
        trigger_name("ins", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('ins', spec.table))} AFTER INSERT ON {t} "
            f"BEGIN {_log(spec, OP_INSERT, 'NEW')} END"
        ),
        trigger_name("upd", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('upd', spec.table))} AFTER UPDATE ON {t} "
            f"BEGIN {_log(spec, OP_UPDATE, 'NEW')} END"
        ),
        trigger_name("key", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('key', spec.table))} AFTER {key_update} "
            f"WHEN {key_changed} BEGIN {_log(spec, OP_OLD_KEY, 'OLD')} END"
        ),
        trigger_name("del", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('del', spec.table))} AFTER DELETE ON {t} "
            f"BEGIN {_log(spec, OP_DELETE, 'OLD')} END"
        ),
    }
    if spec.conflicts:
        triggers.update(_victim_triggers(spec))
    return triggers


def drop_trigger(name: str) -> str:
    """DROP TRIGGER for one of dynasync's triggers."""
    return f"DROP TRIGGER IF EXISTS {quote_ident(name)}"


# --- catalogue ---------------------------------------------------------------

LIST_OWN_TRIGGERS = (
    "SELECT name, tbl_name, sql FROM sqlite_master "
    "WHERE type = 'trigger' AND name LIKE '\\_dynasync\\_%' ESCAPE '\\'"
)
TABLE_SQL = "SELECT type, sql FROM sqlite_master WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE"
INDEX_SQL = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?"
TABLE_XINFO = "PRAGMA table_xinfo({table})"  # every column, generated ones too


def select_rowid(table: str, rowid: str) -> str:
    """A query that fails unless `rowid` names the table's rowid."""
    return f"SELECT {rowid} FROM {quote_ident(table)} LIMIT 0"

OWN_TABLES_PRESENT = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
    f"('{CHANGELOG}', '{STATE}', '{BACKFILL}', '{DEAD_LETTERS}', '{KEYS}', '{OBJECTS}')"
)
SCHEMA_COOKIE = "PRAGMA schema_version"
JOURNAL_MODE = "PRAGMA journal_mode"

# --- state ---------------------------------------------------------------------

STATE_GET = f"SELECT value FROM {STATE} WHERE name = ?"
STATE_SET = (
    f"INSERT INTO {STATE} (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
STATE_DELETE = f"DELETE FROM {STATE} WHERE name = ?"
STATE_PREFIXED = (
    f"SELECT substr(name, length(?1) + 1), value FROM {STATE} WHERE substr(name, 1, length(?1)) = ?1"
)
STATE_INIT = f"INSERT INTO {STATE} (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"

# --- changelog -----------------------------------------------------------------

CHANGELOG_MAX = f"SELECT max(seq) FROM {CHANGELOG}"
CHANGELOG_AT = f"SELECT tbl, k1, k2 FROM {CHANGELOG} WHERE seq = ?"
CHANGELOG_HAS_MARK = f"SELECT 1 FROM {CHANGELOG} WHERE seq = ? AND op = '{OP_MARK}'"
CHANGELOG_OLDEST_PENDING = f"SELECT min(seq), count(*) FROM {CHANGELOG} WHERE seq > ?"
CHANGELOG_PENDING = f"SELECT count(*) FROM {CHANGELOG} WHERE seq > ?"
CHANGELOG_PENDING_BY_TABLE = f"SELECT tbl, count(*) FROM {CHANGELOG} WHERE seq > ? GROUP BY tbl"
CHANGELOG_SLICE_END = (
    f"SELECT max(seq), count(*) FROM (SELECT seq FROM {CHANGELOG} WHERE seq > ? ORDER BY seq LIMIT ?)"
)
CHANGELOG_SLICE_TABLES = f"SELECT DISTINCT tbl FROM {CHANGELOG} WHERE seq > ? AND seq <= ?"
# Keep the row at the new mark, so the next seq SQLite hands out is above it,
# and tag it: a change that lands at the mark's seq after the changelog was
# emptied behind dynasync's back is then told apart from the kept row.
CHANGELOG_PRUNE = f"DELETE FROM {CHANGELOG} WHERE seq < ?"
CHANGELOG_MARK = f"UPDATE {CHANGELOG} SET op = '{OP_MARK}' WHERE seq = ?"
CHANGELOG_ENQUEUE = f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) VALUES (?, ?, ?, ?)"
# Whether a key has changes not yet applied (params: the mark, table, k1, k2): the pending part only.
CHANGELOG_KEY_PENDING = f"SELECT 1 FROM {CHANGELOG} WHERE seq > ? AND tbl = ? AND k1 IS ? AND k2 IS ? LIMIT 1"


def _exact(left: str, right: str, collation: str, op: str = "=") -> str:
    """`left` equals `right` as bytes, the way DynamoDB compares keys, whatever
    the column's own collation. Under a non-BINARY primary-key collation the
    first comparison lets SQLite use the key's index, and the second rejects
    matches that differ in case or spaces. `op` "IS" makes NULL equal NULL."""
    if collation.upper() == "BINARY":
        return f"{left} {op} {right} COLLATE BINARY"
    return f"{left} {op} {right} {collate(collation)} AND {left} {op} {right} COLLATE BINARY"


def _source(table: str, where: str | None) -> str:
    """The table, or only its rows that match the filter (only its columns are in scope)."""
    if where is None:
        return quote_ident(table)
    return f"(SELECT * FROM {quote_ident(table)} WHERE ({where}))"


def slice_rows(table: str, key: Sequence[str], collations: Sequence[str], where: str | None = None) -> str:
    """Distinct keys of one table in a changelog slice, each with its current
    row, all NULL when the row is gone or no longer matches the filter.
    Params: (low_seq, high_seq, table)."""
    join = " AND ".join(
        _exact(f"t.{quote_ident(c)}", f"c.k{i}", coll)
        for i, (c, coll) in enumerate(zip(key, collations, strict=True), start=1)
    )
    return (
        f"SELECT c.k1, c.k2, t.* FROM (SELECT DISTINCT k1, k2 FROM {CHANGELOG} "
        "WHERE seq > ?1 AND seq <= ?2 AND tbl = ?3) AS c "
        f"LEFT JOIN {_source(table, where)} AS t ON {join}"
    )


# --- backfill and verify --------------------------------------------------------


def chunk_after(
    table: str, key: Sequence[str], collations: Sequence[str], first: bool, where: str | None = None
) -> str:
    """Rows with a non-NULL key that match the filter, in primary-key order,
    after a key (params: the key values unless first, then the limit). The
    order and the comparison use the primary key's own collations, under
    which keys are unique, so paging never skips a row. NULL keys are read by
    null_key_rows."""
    cols = [f"{quote_ident(c)} {collate(coll)}" for c, coll in zip(key, collations, strict=True)]
    conds = [f"{quote_ident(c)} IS NOT NULL" for c in key]
    if not first and len(key) == 1:
        conds.insert(0, f"{quote_ident(key[0])} > ?1 {collate(collations[0])}")
    elif not first:
        # (a, b) > (?, ?) spelled out: a row value with COLLATE cannot use the index.
        a, b = (quote_ident(c) for c in key)
        ca, cb = (collate(c) for c in collations)
        conds.insert(0, f"{a} >= ?1 {ca} AND ({a} > ?1 {ca} OR {b} > ?2 {cb})")
    if where is not None:
        conds.append(f"({where})")
    limit = "?1" if first else f"?{len(key) + 1}"
    cond = " AND ".join(conds)
    return f"SELECT * FROM {quote_ident(table)} WHERE {cond} ORDER BY {', '.join(cols)} LIMIT {limit}"


def rows_by_key(
    table: str,
    key: Sequence[str],
    collations: Sequence[str],
    select: str | None = None,
    where: str | None = None,
) -> str:
    """The rows (or with `select=None`, their key columns) whose key is exactly
    these values and that match the filter (params: the key values)."""
    cond = " AND ".join(
        _exact(quote_ident(c), f"?{i}", coll)
        for i, (c, coll) in enumerate(zip(key, collations, strict=True), start=1)
    )
    if where is not None:
        cond += f" AND ({where})"
    what = select or ", ".join(quote_ident(c) for c in key)
    return f"SELECT {what} FROM {quote_ident(table)} WHERE {cond}"


def null_key_rows(table: str, key: Sequence[str], where: str | None = None) -> str:
    """Rows with a NULL key column (that match the filter): they can never become items."""
    cond = " OR ".join(f"{quote_ident(c)} IS NULL" for c in key)
    if where is not None:
        cond = f"({cond}) AND ({where})"
    return f"SELECT * FROM {quote_ident(table)} WHERE {cond}"


@functools.cache  # a change of a NULL-keyed row builds it each time otherwise
def null_key_row(
    table: str, key: Sequence[str], collations: Sequence[str], nulls: Sequence[bool], where: str | None = None
) -> str:
    """One row whose key is exactly this one with NULLs in it (a NULL where `nulls`
    says, the other values exact): found through the primary key's index, never a
    scan. Params: the key's values in key order, up to the last that is not NULL."""
    conds = [
        f"{quote_ident(c)} IS NULL" if null else _exact(quote_ident(c), f"?{i}", coll)
        for i, (c, coll, null) in enumerate(zip(key, collations, nulls, strict=True), start=1)
    ]
    if where is not None:
        conds.append(f"({where})")
    return f"SELECT * FROM {quote_ident(table)} WHERE {' AND '.join(conds)} LIMIT 1"


def count_rows(table: str, where: str | None = None) -> str:
    """How many rows a table has (that match the filter)."""
    return f"SELECT count(*) FROM {_source(table, where)}"


def expression_probe(expression: str, columns: Sequence[str]) -> str:
    """Compiles an expression with only these columns in scope."""
    values = ", ".join(f"NULL AS {quote_ident(c)}" for c in columns)
    source = f" FROM (SELECT {values})" if columns else ""
    return f"SELECT ({expression}){source} LIMIT 0"


def filter_probe(table: str, where: str) -> str:
    """Compiles a row filter against its table without reading a row."""
    return f"SELECT 1 FROM {quote_ident(table)} WHERE ({where}) LIMIT 0"


FILTER_PROBE_INDEX = f"{PREFIX}filter_probe"


def filter_index_probe(table: str, column: str, where: str) -> list[str]:
    """An empty TEMP copy of the table (shadowing it on this connection only),
    indexed with the filter as a partial index's condition, and a row of NULLs stored in it."""
    t = quote_ident(table)
    return [
        f"CREATE TEMP TABLE {t} AS SELECT * FROM main.{t} WHERE 0",
        f"CREATE INDEX temp.{quote_ident(FILTER_PROBE_INDEX)} ON {t} ({quote_ident(column)}) WHERE ({where})",
        f"INSERT INTO temp.{t} DEFAULT VALUES",
    ]


def filter_index_probe_drop(table: str) -> str:
    """Drops the TEMP copy filter_index_probe made (and its index)."""
    return f"DROP TABLE IF EXISTS temp.{quote_ident(table)}"


def filter_by_key(table: str, key: Sequence[str], collations: Sequence[str], where: str) -> str:
    """Whether the row with exactly this key matches the filter: 1 or 0 (params: the key values)."""
    return rows_by_key(table, key, collations, select=f"CASE WHEN ({where}) THEN 1 ELSE 0 END")


BACKFILL_GET = f"SELECT tbl, k1, k2, started, rows, done FROM {BACKFILL}"
BACKFILL_START = (
    f"INSERT INTO {BACKFILL} (tbl, k1, k2, started, rows, done) VALUES (?, NULL, NULL, 0, 0, 0) "
    "ON CONFLICT (tbl) DO UPDATE SET k1 = NULL, k2 = NULL, started = 0, rows = 0, done = 0"
)
BACKFILL_PROGRESS = f"UPDATE {BACKFILL} SET k1 = ?, k2 = ?, started = 1, rows = rows + ? WHERE tbl = ?"
BACKFILL_DONE = f"UPDATE {BACKFILL} SET done = 1 WHERE tbl = ?"

# --- dead letters --------------------------------------------------------------

DEAD_COUNT = f"SELECT count(*) FROM {DEAD_LETTERS}"
DEAD_ANY = f"SELECT 1 FROM {DEAD_LETTERS} LIMIT 1"
DEAD_COUNT_BY_TABLE = f"SELECT tbl, count(*) FROM {DEAD_LETTERS} GROUP BY tbl"
DEAD_LIST = (
    "SELECT tbl, k1, k2, reason, seq, first_failed, last_failed, attempts, kind "
    f"FROM {DEAD_LETTERS} ORDER BY tbl, rowid"
)
DEAD_TABLES = f"SELECT DISTINCT tbl FROM {DEAD_LETTERS} ORDER BY tbl"
# One chunk of a table's dead letters after a rowid (params: table, rowid, limit), for an export.
# `+d.tbl` keeps SQLite off the (tbl, k1, k2) index: walking the rowids in order
# lets it stop at the limit, where the index would read (and join) all the table's
# dead letters to sort them, at every chunk.
_DEAD_EXPORTED = "d.rowid, d.k1, d.k2, d.reason, d.kind, d.attempts, d.first_failed, d.last_failed"
_DEAD_CHUNK_WHERE = "WHERE +d.tbl = ?1 AND d.rowid > ?2 ORDER BY d.rowid LIMIT ?3"
DEAD_CHUNK = f"SELECT {_DEAD_EXPORTED} FROM {DEAD_LETTERS} AS d {_DEAD_CHUNK_WHERE}"


def dead_letters_with_rows(table: str, key: Sequence[str], collations: Sequence[str]) -> str:
    """DEAD_CHUNK, each dead letter followed by its row as it is now: `found` (1,
    or NULL when the row is gone), then the row's columns. Keys are compared in
    SQL, as exact bytes with their storage classes, through the key's index; a
    NULL key column matches NULL, so a NULL-keyed dead letter may meet several rows."""
    cond = " AND ".join(
        _exact(f"t.{quote_ident(c)}", f"d.k{i}", coll, "IS")
        for i, (c, coll) in enumerate(zip(key, collations, strict=True), start=1)
    )
    return (
        f"SELECT {_DEAD_EXPORTED}, t.* FROM {DEAD_LETTERS} AS d "
        f"LEFT JOIN (SELECT 1 AS _dynasync_found, * FROM {quote_ident(table)}) AS t ON {cond} "
        f"{_DEAD_CHUNK_WHERE}"
    )


# A key is bound as (table, k1, k2, k1 is TEXT that is not UTF-8, k2 likewise):
# Python hands such TEXT over as bytes, which SQLite would store as a BLOB.
_K1 = "(CASE WHEN ?4 THEN CAST(?2 AS TEXT) ELSE ?2 END)"
_K2 = "(CASE WHEN ?5 THEN CAST(?3 AS TEXT) ELSE ?3 END)"
DEAD_FIND = (
    f"SELECT attempts, first_failed FROM {DEAD_LETTERS} WHERE tbl = ?1 AND k1 IS {_K1} AND k2 IS {_K2}"
)
DEAD_DELETE_TABLE = f"DELETE FROM {DEAD_LETTERS} WHERE tbl = ?"
DEAD_DELETE = f"DELETE FROM {DEAD_LETTERS} WHERE tbl = ?1 AND k1 IS {_K1} AND k2 IS {_K2}"
DEAD_INSERT = (
    f"INSERT INTO {DEAD_LETTERS} (tbl, k1, k2, reason, seq, first_failed, last_failed, attempts, kind, item) "
    f"VALUES (?1, {_K1}, {_K2}, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
)
# Copied in SQL, so every key keeps its storage class.
DEAD_REQUEUE = (
    f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) SELECT tbl, '{OP_UPDATE}', k1, k2 FROM {DEAD_LETTERS} "
    "WHERE ?1 IS NULL OR tbl = ?1"
)
DEAD_REQUEUE_COLLISION = (  # params: table, the freed item (through the index on it)
    f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) SELECT tbl, '{OP_UPDATE}', k1, k2 FROM {DEAD_LETTERS} "
    "WHERE tbl = ?1 AND item = ?2 AND kind = 'collision'"
)

# --- which row owns which item (owners.py) ----------------------------------------

# verify's record of the items current rows produce: TEMP, outside the application's file.
PRODUCED_CREATE = "CREATE TEMP TABLE IF NOT EXISTS _dynasync_produced (item TEXT PRIMARY KEY, tbl, k1, k2)"
PRODUCED_CLEAR = "DELETE FROM temp._dynasync_produced"
PRODUCED_CLAIM = "INSERT OR IGNORE INTO temp._dynasync_produced (item, tbl, k1, k2) VALUES (?, ?, ?, ?)"
PRODUCED_OWNER = "SELECT tbl, k1, k2 FROM temp._dynasync_produced WHERE item = ?"

KEYS_OWNER = f"SELECT tbl, k1, k2 FROM {KEYS} WHERE target = ? AND item = ?"
KEYS_OF_ROW = f"SELECT item FROM {KEYS} WHERE tbl = ? AND k1 IS ? AND k2 IS ? AND target = ?"
KEYS_DROP_TARGET = f"DELETE FROM {KEYS} WHERE tbl = ? AND target = ?"
KEYS_RELEASE = f"DELETE FROM {KEYS} WHERE tbl = ? AND k1 IS ? AND k2 IS ?"
KEYS_CLAIM_DROP = f"DELETE FROM {KEYS} WHERE target = ? AND item = ?"
KEYS_CLAIM = f"INSERT INTO {KEYS} (tbl, k1, k2, target, item) VALUES (?, ?, ?, ?, ?)"
KEYS_FORGET_ROW_ITEM = f"DELETE FROM {KEYS} WHERE tbl = ? AND k1 IS ? AND k2 IS ? AND target = ? AND item = ?"
KEYS_ANY = f"SELECT 1 FROM {KEYS} WHERE tbl = ? LIMIT 1"

# --- S3 objects of oversized items (dynasync.objects) -----------------------------

OBJECTS_PRESENT = f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{OBJECTS}'"
OBJECTS_TARGETS = f"SELECT DISTINCT target FROM {OBJECTS}"
OBJECTS_INTEND = (
    f"INSERT INTO {OBJECTS} (target, item, bucket, object, dirty) VALUES (?, ?, ?, ?, 1) "
    "ON CONFLICT DO UPDATE SET dirty = 1"
)
OBJECTS_TOUCH = f"UPDATE {OBJECTS} SET dirty = 1 WHERE target = ? AND item = ?"
OBJECTS_DIRTY_TARGETS = f"SELECT DISTINCT target FROM {OBJECTS} WHERE dirty"
OBJECTS_DIRTY = f"SELECT DISTINCT item FROM {OBJECTS} WHERE dirty AND target = ? LIMIT ?"
OBJECTS_COUNTS = (
    f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT target, item FROM {OBJECTS} WHERE dirty)) "
    f"FROM {OBJECTS}"
)
OBJECTS_OF_ITEM = f"SELECT bucket, object FROM {OBJECTS} WHERE target = ? AND item = ?"
OBJECTS_CLEAN = f"UPDATE {OBJECTS} SET dirty = 0 WHERE target = ? AND item = ? AND bucket = ? AND object = ?"
OBJECTS_FORGET = f"DELETE FROM {OBJECTS} WHERE target = ? AND item = ? AND bucket = ? AND object = ?"
OBJECTS_FORGET_OBJECT = f"DELETE FROM {OBJECTS} WHERE bucket = ? AND object = ?"
