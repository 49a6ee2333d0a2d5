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
