"""Figure 1: capture cost on the application's own writes. The same workload
runs on a fresh database without triggers, with dynasync's, and with
sqlite-chronicle's (the peer), interleaved, best of several repetitions."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_chronicle

from dynasync import sql
from dynasync.schema import inspect

DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT)"
SETUPS = ("none", "dynasync", "chronicle")


def _open(path: Path, setup: str, preload: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(DDL)
    if preload:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", (_row(i) for i in range(preload)))
        conn.execute("COMMIT")
    if setup == "dynasync":
        for stmt in sql.CREATE_OWN_TABLES:
            conn.execute(stmt)
        for stmt in sql.trigger_sql(inspect(conn, "items").trigger_spec).values():
            conn.execute(stmt)
    elif setup == "chronicle":
        sqlite_chronicle.enable_chronicle(conn, "items")
    return conn


def _row(i: int) -> tuple[int, str, int, float, str]:
    return (i, f"item {i}", i % 100, i * 0.25, "a note of moderate length for realism")


def bulk_insert(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", (_row(i) for i in range(100_000)))
    conn.execute("COMMIT")


def autocommit_inserts(conn: sqlite3.Connection) -> None:
    for i in range(3_000):
        conn.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)", _row(i))


def updates_by_key(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    for i in range(20_000):
        conn.execute("UPDATE items SET qty = qty + 1, price = ? WHERE id = ?", (i * 0.5, i))
    conn.execute("COMMIT")


WORKLOADS: list[tuple[str, Callable[[sqlite3.Connection], None], int, float]] = [
    # name, workload, rows preloaded, target ratio
    ("bulk insert 100k rows, one transaction", bulk_insert, 0, 2.0),
    ("3,000 autocommit single-row inserts", autocommit_inserts, 0, 1.6),
    ("20k updates by key", updates_by_key, 20_000, 2.0),
]


def measure(repeats: int = 5) -> list[dict[str, object]]:
    results = []
    for name, work, preload, target in WORKLOADS:
        best = {s: float("inf") for s in SETUPS}
        for _ in range(repeats):
            for setup in SETUPS:  # interleaved, so drift hits every setup alike
                with tempfile.TemporaryDirectory() as d:
                    conn = _open(Path(d) / "bench.db", setup, preload)
                    start = time.perf_counter()
                    work(conn)
                    best[setup] = min(best[setup], time.perf_counter() - start)
                    conn.close()
        results.append({
            "workload": name,
            "none_s": best["none"],
            "dynasync_ratio": best["dynasync"] / best["none"],
            "chronicle_ratio": best["chronicle"] / best["none"],
            "target": target,
        })
    return results


if __name__ == "__main__":
    for r in measure(3):
        print(r)


# Capture cost for every index shape an application may have: the REPLACE
# victim search must go through the index, so the cost must not depend on the
# table's size or on the shape.
SHAPE_COLUMNS = "email TEXT, qty INTEGER, note TEXT"
SHAPES: list[tuple[str, list[str], bool]] = [
    # name, DDL, text key
    ("INTEGER PRIMARY KEY", [f"CREATE TABLE items (id INTEGER PRIMARY KEY, {SHAPE_COLUMNS})"], False),
    ("TEXT key (rowid table)", [f"CREATE TABLE items (id TEXT PRIMARY KEY, {SHAPE_COLUMNS})"], True),
    ("NOCASE TEXT key", [f"CREATE TABLE items (id TEXT PRIMARY KEY COLLATE NOCASE, {SHAPE_COLUMNS})"], True),
    ("WITHOUT ROWID", [f"CREATE TABLE items (id TEXT PRIMARY KEY, {SHAPE_COLUMNS}) WITHOUT ROWID"], True),
    ("UNIQUE (email)", [f"CREATE TABLE items (id INTEGER PRIMARY KEY, {SHAPE_COLUMNS})",
                        "CREATE UNIQUE INDEX items_u ON items (email)"], False),
    ("UNIQUE (email COLLATE NOCASE)", [f"CREATE TABLE items (id INTEGER PRIMARY KEY, {SHAPE_COLUMNS})",
                                       "CREATE UNIQUE INDEX items_u ON items (email COLLATE NOCASE)"], False),
    ("partial UNIQUE (email) WHERE qty >= 0", [f"CREATE TABLE items (id INTEGER PRIMARY KEY, {SHAPE_COLUMNS})",
                                              "CREATE UNIQUE INDEX items_u ON items (email) WHERE qty >= 0"], False),
    ("expression UNIQUE (lower(email))", [f"CREATE TABLE items (id INTEGER PRIMARY KEY, {SHAPE_COLUMNS})",
                                          "CREATE UNIQUE INDEX items_u ON items (lower(email))"], False),
    ("UNIQUE on a generated column", [
        f"CREATE TABLE items (id INTEGER PRIMARY KEY, {SHAPE_COLUMNS}, norm TEXT AS (lower(email)) VIRTUAL)",
        "CREATE UNIQUE INDEX items_u ON items (norm)"], False),
]


def _shape_db(path: Path, ddl: list[str], text_key: bool, preload: int, triggers: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for stmt in ddl:
        conn.execute(stmt)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items (id, email, qty, note) VALUES (?, ?, ?, 'n')",
                     ((_key(i, text_key), f"user{i}@example.com", i % 100) for i in range(preload)))
    conn.execute("COMMIT")
    if triggers:
        for stmt in sql.CREATE_OWN_TABLES:
            conn.execute(stmt)
        for stmt in sql.trigger_sql(inspect(conn, "items").trigger_spec).values():
            conn.execute(stmt)
    return conn


def _key(i: int, text_key: bool) -> object:
    return f"k{i:09d}" if text_key else i


def _shape_work(conn: sqlite3.Connection, text_key: bool, preload: int, n: int) -> None:
    for i in range(preload, preload + n):  # autocommit inserts into a large table
        conn.execute("INSERT INTO items (id, email, qty, note) VALUES (?, ?, 1, 'n')",
                     (_key(i, text_key), f"new{i}@example.com"))
    conn.execute("BEGIN")
    for i in range(n):  # updates of the indexed column
        conn.execute("UPDATE items SET email = ? WHERE id = ?", (f"moved{i}@example.com", _key(i, text_key)))
    conn.execute("COMMIT")


def measure_shapes(quick: bool = False) -> list[dict[str, object]]:
    """Per index shape: time of 2,000 autocommit inserts and 2,000 updates of the
    indexed column on a 100k-row table, with dynasync's triggers / without."""
    preload, n, repeats = (20_000, 500, 2) if quick else (100_000, 2_000, 3)
    results = []
    for name, ddl, text_key in SHAPES:
        best = {False: float("inf"), True: float("inf")}
        for _ in range(repeats):
            for triggers in (False, True):
                with tempfile.TemporaryDirectory() as d:
                    conn = _shape_db(Path(d) / "shape.db", ddl, text_key, preload, triggers)
                    start = time.perf_counter()
                    _shape_work(conn, text_key, preload, n)
                    best[triggers] = min(best[triggers], time.perf_counter() - start)
                    conn.close()
        results.append({"shape": name, "rows": preload, "writes": 2 * n, "none_s": best[False],
                        "ratio": best[True] / best[False], "target": 2.0})
    return results


# Key templates over any column change nothing in the capture triggers: they
# still log the key alone (dynasync.owners keeps the old item keys instead), so
# a templated table costs the application what a plain one does.
ORDERS = "CREATE TABLE items (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL, note TEXT)"


def _triggers_for(options: dict[str, object]) -> list[str]:
    from dynasync import config as config_mod
    from dynasync.tables import SyncedTable

    conn = sqlite3.connect(":memory:")
    conn.execute(ORDERS)
    cfg = config_mod.parse({"source": {"database": "x"},
                            "tables": [{"source": "items", "target": "bench-items", **options}]})
    return list(sql.trigger_sql(SyncedTable(cfg.tables[0], inspect(conn, "items")).schema.trigger_spec).values())


def measure_templates(quick: bool = False) -> list[dict[str, object]]:
    """Capture cost of orders keyed USER#{user_id} / ORDER#{id} next to the plain table."""
    templated = {"partition_key": {"name": "PK", "template": "USER#{user_id}"},
                 "sort_key": {"name": "SK", "template": "ORDER#{id}"}}
    n, repeats = (5_000, 2) if quick else (50_000, 3)
    out = []
    for label, options in (("plain key", {}), ("key template over a non-key column", templated)):
        triggers = _triggers_for(options)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(repeats):
            for armed in (False, True):
                with tempfile.TemporaryDirectory() as d:
                    conn = sqlite3.connect(Path(d) / "t.db", isolation_level=None)
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(ORDERS)
                    if armed:
                        for stmt in (*sql.CREATE_OWN_TABLES, *triggers):
                            conn.execute(stmt)
                    start = time.perf_counter()
                    conn.execute("BEGIN")
                    conn.executemany("INSERT INTO items VALUES (?, ?, ?, 'n')", ((i, i % 97, i * 0.5) for i in range(n)))
                    for i in range(0, n, 2):  # orders moving between users: the item moves too
                        conn.execute("UPDATE items SET user_id = user_id + 1 WHERE id = ?", (i,))
                    conn.execute("COMMIT")
                    best[armed] = min(best[armed], time.perf_counter() - start)
                    conn.close()
        out.append({"case": label, "rows": n, "ratio": best[True] / best[False], "target": 2.0,
                    "same_triggers": triggers == _triggers_for({})})
    return out
