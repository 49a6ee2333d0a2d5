"""Every piece of SQL text dynasync runs: its own tables, the capture triggers
and the queries over both. Identifiers from the config or the schema only ever
reach SQL through quote_ident / quote_literal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "_dynasync_"
CHANGELOG = "_dynasync_changelog"
STATE = "_dynasync_state"
BACKFILL = "_dynasync_backfill"
DEAD_LETTERS = "_dynasync_dead_letters"
OWN_TABLES = (CHANGELOG, STATE, BACKFILL, DEAD_LETTERS)
SCHEMA_VERSION = "1"

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


# seq is a plain INTEGER PRIMARY KEY (cheaper per row than AUTOINCREMENT). It
# never goes back because a pass keeps the row at the high-water mark when it
# prunes: max(seq) therefore never drops below the mark.
CREATE_OWN_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {CHANGELOG} (\n"
    "  seq INTEGER PRIMARY KEY,\n"
    "  tbl TEXT NOT NULL,\n"
    "  op TEXT NOT NULL,\n"
    "  k1,\n"
    "  k2\n"
    ")",
    f"CREATE TABLE IF NOT EXISTS {STATE} (name TEXT PRIMARY KEY, value)",
    f"CREATE TABLE IF NOT EXISTS {BACKFILL} (\n"
    "  tbl TEXT PRIMARY KEY,\n"
    "  k1,\n"
    "  k2,\n"
    "  started INTEGER NOT NULL DEFAULT 0,\n"
    "  rows INTEGER NOT NULL DEFAULT 0,\n"
    "  done INTEGER NOT NULL DEFAULT 0\n"
    ")",
    f"CREATE TABLE IF NOT EXISTS {DEAD_LETTERS} (\n"
    "  tbl TEXT NOT NULL,\n"
    "  k1,\n"
    "  k2,\n"
    "  reason TEXT NOT NULL,\n"
    "  seq INTEGER,\n"
    "  first_failed REAL NOT NULL,\n"
    "  last_failed REAL NOT NULL,\n"
    "  attempts INTEGER NOT NULL DEFAULT 1\n"
    ")",
    f"CREATE INDEX IF NOT EXISTS {PREFIX}dead_letters_key ON {DEAD_LETTERS} (tbl, k1, k2)",
)

DROP_OWN_TABLES = tuple(f"DROP TABLE IF EXISTS {t}" for t in OWN_TABLES)


@dataclass(frozen=True)
class TriggerSpec:
    """What the trigger generator needs to know about one table."""

    table: str
    key: tuple[str, ...]
    unique_indexes: tuple[tuple[str, ...], ...] = ()


def trigger_name(kind: str, table: str) -> str:
    """The name of one of a table's capture triggers ("ins", "upd", "key", "del", "rep", "repu")."""
    return f"{PREFIX}{kind}_{table}"


def _log(spec: TriggerSpec, op: str, row: str) -> str:
    keys = [f"{row}.{quote_ident(c)}" for c in spec.key] + ["NULL"] * (2 - len(spec.key))
    return (
        f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) "
        f"VALUES ({quote_literal(spec.table)}, '{op}', {', '.join(keys)});"
    )


def _log_victims(spec: TriggerSpec, columns: Sequence[str], exclude_row: str) -> str:
    """Log rows that REPLACE conflict resolution is about to delete.

    SQLite fires no DELETE trigger for them unless recursive_triggers is on.
    Over-logging is harmless: the pass reads each logged key's current state.
    """
    t = quote_ident(spec.table)
    keys = [quote_ident(c) for c in spec.key] + ["NULL"] * (2 - len(spec.key))
    match = " AND ".join(f"{quote_ident(c)} = NEW.{quote_ident(c)}" for c in columns)
    same = " AND ".join(f"{quote_ident(c)} IS {exclude_row}.{quote_ident(c)}" for c in spec.key)
    return (
        f"INSERT INTO {CHANGELOG} (tbl, op, k1, k2) "
        f"SELECT {quote_literal(spec.table)}, '{OP_REPLACED}', {', '.join(keys)} "
        f"FROM {t} WHERE {match} AND NOT ({same});"
    )


def trigger_sql(spec: TriggerSpec) -> dict[str, str]:
    """The capture triggers of one table, by trigger name.

    They log only the key and call no SQL function, so they stay cheap and work
    with trusted_schema=OFF on any SQLite build.
    """
    if not 1 <= len(spec.key) <= 2:
        raise ValueError("a key has one or two columns")
    t = quote_ident(spec.table)
    key_cols = ", ".join(quote_ident(c) for c in spec.key)
    key_changed = " OR ".join(f"OLD.{quote_ident(c)} IS NOT NEW.{quote_ident(c)}" for c in spec.key)
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
            f"CREATE TRIGGER {quote_ident(trigger_name('key', spec.table))} AFTER UPDATE OF {key_cols} "
            f"ON {t} WHEN {key_changed} BEGIN {_log(spec, OP_OLD_KEY, 'OLD')} END"
        ),
        trigger_name("del", spec.table): (
            f"CREATE TRIGGER {quote_ident(trigger_name('del', spec.table))} AFTER DELETE ON {t} "
            f"BEGIN {_log(spec, OP_DELETE, 'OLD')} END"
        ),
    }
    if spec.unique_indexes:
        on_insert = " ".join(_log_victims(spec, cols, "NEW") for cols in spec.unique_indexes)
        triggers[trigger_name("rep", spec.table)] = (
            f"CREATE TRIGGER {quote_ident(trigger_name('rep', spec.table))} BEFORE INSERT ON {t} "
            f"BEGIN {on_insert} END"
        )
        unique_cols = sorted({c for cols in spec.unique_indexes for c in cols})
        on_update = " ".join(_log_victims(spec, cols, "OLD") for cols in spec.unique_indexes)
        triggers[trigger_name("repu", spec.table)] = (
            f"CREATE TRIGGER {quote_ident(trigger_name('repu', spec.table))} BEFORE UPDATE OF "
            f"{', '.join(quote_ident(c) for c in unique_cols)} ON {t} BEGIN {on_update} END"
        )
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
OWN_TABLES_PRESENT = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
    f"('{CHANGELOG}', '{STATE}', '{BACKFILL}', '{DEAD_LETTERS}')"
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
STATE_INIT = f"INSERT INTO {STATE} (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"

# --- changelog -----------------------------------------------------------------

CHANGELOG_MAX = f"SELECT max(seq) FROM {CHANGELOG}"
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


def _key_join(key: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(
        f"{left}.{quote_ident(c)} = {right}.k{i}" for i, c in enumerate(key, start=1)
    )


def slice_rows(table: str, key: Sequence[str]) -> str:
    """Distinct keys of one table in a changelog slice, each with its current row
    (all NULL when the row is gone). Params: (low_seq, high_seq, table)."""
    return (
        f"SELECT c.k1, c.k2, t.* FROM (SELECT DISTINCT k1, k2 FROM {CHANGELOG} "
        "WHERE seq > ? AND seq <= ? AND tbl = ?) AS c "
        f"LEFT JOIN {quote_ident(table)} AS t ON {_key_join(key, 't', 'c')}"
    )


# --- backfill and verify --------------------------------------------------------


def chunk_after(table: str, key: Sequence[str], first: bool) -> str:
    """Rows with a non-NULL key, in key order, after a key (params: the key
    values unless first, then the limit). NULL keys sort first, so they are
    excluded here and read by null_key_rows."""
    cols = ", ".join(quote_ident(c) for c in key)
    conds = [f"{quote_ident(c)} IS NOT NULL" for c in key]
    if not first:
        conds.insert(0, f"({cols}) > ({', '.join('?' for _ in key)})")
    return f"SELECT * FROM {quote_ident(table)} WHERE {' AND '.join(conds)} ORDER BY {cols} LIMIT ?"


def row_exists(table: str, key: Sequence[str]) -> str:
    """Whether a row with this key exists (params: the key values)."""
    cond = " AND ".join(f"{quote_ident(c)} = ?" for c in key)
    return f"SELECT 1 FROM {quote_ident(table)} WHERE {cond}"


def null_key_rows(table: str, key: Sequence[str], first: bool = False) -> str:
    """Rows with a NULL key column: they can never become items."""
    cond = " OR ".join(f"{quote_ident(c)} IS NULL" for c in key)
    return f"SELECT * FROM {quote_ident(table)} WHERE {cond}" + (" LIMIT 1" if first else "")


def count_rows(table: str) -> str:
    """How many rows a table has."""
    return f"SELECT count(*) FROM {quote_ident(table)}"


BACKFILL_GET = f"SELECT tbl, k1, k2, started, rows, done FROM {BACKFILL}"
BACKFILL_START = (
    f"INSERT INTO {BACKFILL} (tbl, k1, k2, started, rows, done) VALUES (?, NULL, NULL, 0, 0, 0) "
    "ON CONFLICT (tbl) DO UPDATE SET k1 = NULL, k2 = NULL, started = 0, rows = 0, done = 0"
)
BACKFILL_PROGRESS = f"UPDATE {BACKFILL} SET k1 = ?, k2 = ?, started = 1, rows = rows + ? WHERE tbl = ?"
BACKFILL_DONE = f"UPDATE {BACKFILL} SET done = 1 WHERE tbl = ?"

# --- dead letters --------------------------------------------------------------

DEAD_COUNT = f"SELECT count(*) FROM {DEAD_LETTERS}"
DEAD_COUNT_BY_TABLE = f"SELECT tbl, count(*) FROM {DEAD_LETTERS} GROUP BY tbl"
DEAD_LIST = (
    "SELECT tbl, k1, k2, reason, seq, first_failed, last_failed, attempts "
    f"FROM {DEAD_LETTERS} ORDER BY tbl, rowid"
)
DEAD_FIND = f"SELECT attempts, first_failed FROM {DEAD_LETTERS} WHERE tbl = ? AND k1 IS ? AND k2 IS ?"
DEAD_DELETE = f"DELETE FROM {DEAD_LETTERS} WHERE tbl = ? AND k1 IS ? AND k2 IS ?"
DEAD_INSERT = (
    f"INSERT INTO {DEAD_LETTERS} (tbl, k1, k2, reason, seq, first_failed, last_failed, attempts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
DEAD_KEYS = f"SELECT tbl, k1, k2 FROM {DEAD_LETTERS}"
