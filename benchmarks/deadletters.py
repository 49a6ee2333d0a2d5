"""Sync CPU per change with many dead letters stored, and with NULL-keyed rows,
beside the same changes without them (figure 12).

Three databases hold one table `items(a TEXT, b TEXT, name TEXT, qty INTEGER,
note TEXT, PRIMARY KEY (a, b))` synced under a key template over a non-key
column (`PK = "ITEM#{name}"`), backfilled first so that dynasync has recorded
each row's item. The same pending changes wait in each: one update per row,
every fourth a move (`name` changed, so the old item is freed and the
collision dead letters waiting for it are looked up). `plain` has nothing
else; `dead` also holds 100,000 dead letters (`--quick`: 10,000), inserted
straight into `_dynasync_dead_letters`: nine in ten collisions naming the item
they were refused, one in ten unstorable; `nullkey` also holds NULL-keyed rows
(b IS NULL) up to 300,000 rows (`--quick`: 30,000), and every fourth change,
one after each move, updates one of them instead. Each is measured as
cpu.py measures `sync`: a child's CPU after its imports, at two sizes, the
difference over the difference in changes, best of interleaved rounds.

Usage: cd benchmarks && ../.venv/bin/python deadletters.py [--quick] [--repeats R] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cpu

VARIANTS = ("plain", "dead", "nullkey")
TARGET = 1.2  # dead/plain and nullkey/plain at most this


@dataclass(frozen=True)
class Sizes:
    """The step's sizes: changes at two sizes, rows with a full key, dead letters, rows in all."""

    changes: tuple[int, int]
    keyed: int
    dead: int
    total: int


FULL = Sizes((5_000, 25_000), 30_000, 100_000, 300_000)
QUICK = Sizes((2_000, 10_000), 12_000, 10_000, 30_000)
DDL = "CREATE TABLE items (a TEXT, b TEXT, name TEXT, qty INTEGER, note TEXT, PRIMARY KEY (a, b))"
NOTE = "a note of moderate length for realism"


def make_db(path: Path, s: Sizes, variant: str) -> None:
    """The table's rows: `keyed` with a full key, and for nullkey the rest up to `total` with b NULL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(DDL)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                     ((f"k{i:07d}", f"s{i % 7}", f"item {i}", i % 100, NOTE) for i in range(s.keyed)))
    if variant == "nullkey":
        conn.executemany("INSERT INTO items VALUES (?, NULL, ?, ?, ?)",
                         ((f"n{i:07d}", f"null {i}", i % 100, NOTE) for i in range(s.total - s.keyed)))
    conn.execute("COMMIT")
    conn.close()


def dead_letters(db: Path, s: Sizes) -> None:
    """Store `dead` dead letters as failed passes would have: collisions name the item
    they were refused (items the changes never free), one in ten is unstorable."""
    now = time.time()
    spare = range(s.changes[1], s.keyed)  # rows no change touches: their items stay taken

    def letter(i: int) -> tuple[Any, ...]:
        if i % 10 == 9:
            return (f"d{i:07d}", "x", "number out of DynamoDB's range in qty", now - 3600, now, 3,
                    "unstorable", None)
        held = f'{{"PK":{{"S":"ITEM#item {spare[i % len(spare)]}"}}}}'
        return (f"d{i:07d}", "x", f"item {held} is already written by another row", now - 3600, now, 2,
                "collision", held)

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO _dynasync_dead_letters (tbl, k1, k2, reason, seq, first_failed, last_failed, "
                     "attempts, kind, item) VALUES ('items', ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                     (letter(i) for i in range(s.dead)))
    conn.execute("COMMIT")
    conn.close()


def pending_changes(db: Path, n: int, variant: str) -> None:
    """n changes waiting: row i updated, every fourth a move; for nullkey the one after
    each move touches a NULL-keyed row instead."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for i in range(n):
        if i % 4 == 0:
            conn.execute("UPDATE items SET name = ? WHERE a = ? AND b = ?", (f"moved {i}", f"k{i:07d}", f"s{i % 7}"))
        elif i % 4 == 1 and variant == "nullkey":
            conn.execute("UPDATE items SET qty = qty + 1 WHERE a = ? AND b IS NULL", (f"n{i:07d}",))
        else:
            conn.execute("UPDATE items SET qty = qty + 1 WHERE a = ? AND b = ?", (f"k{i:07d}", f"s{i % 7}"))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def prepare(tmp: Path, s: Sizes, variant: str, n: int, endpoint: str) -> cpu.Setup:
    """One variant at one size: its own database (initialised, backfilled, its dead letters
    stored, n changes pending) and a snapshot, restored into it before each run."""
    from harness import run_dynasync, write_config

    db = tmp / f"{variant}-{n}.db"
    make_db(db, s, variant)
    config = write_config(tmp / f"{variant}-{n}.toml", db, endpoint, cpu.TRACKED_TABLE)
    config.write_text(config.read_text() + cpu.TRACKED)
    run_dynasync("init", "--config", str(config))
    run_dynasync("backfill", "--config", str(config))
    if variant == "dead":
        dead_letters(db, s)
    pending_changes(db, n, variant)
    template = tmp / f"{variant}-{n}.template"
    shutil.copyfile(db, template)
    return cpu.Setup([sys.executable, str(cpu.HERE), "--cli", "sync", "--config", str(config)], db, template)


def counted(db: Path) -> dict[str, int]:
    """The dead letters a run left."""
    conn = sqlite3.connect(db)
    try:
        dead = conn.execute("SELECT count(*) FROM _dynasync_dead_letters").fetchone()[0]
        return {"dead_letters": int(dead)}
    finally:
        conn.close()


def measure(quick: bool, repeats: int | None = None) -> dict[str, Any]:
    """CPU µs per change of each variant, and dead/plain and nullkey/plain."""
    from stubproc import StubProcess

    s = QUICK if quick else FULL
    repeats = repeats or (3 if quick else 5)
    small, large = s.changes
    stub = StubProcess()
    samples = {v: cpu.Samples() for v in VARIANTS}
    items: dict[str, dict[str, int]] = {v: {} for v in VARIANTS}
    after: dict[str, dict[str, int]] = {}
    load_before = list(os.getloadavg())
    try:
        with tempfile.TemporaryDirectory(prefix="deadbench-") as tmp:
            plan = {(v, n): prepare(Path(tmp), s, v, n, stub.endpoint) for v in VARIANTS for n in s.changes}
            env = cpu.state_env(Path(tmp))
            for _ in range(repeats):
                for (variant, n), setup in plan.items():
                    setup.restore()
                    cpu.forget_seen(env)
                    before = stub.counts()["items"]
                    samples[variant].add(n, *cpu.run_once(setup.cmd, env))
                    got = stub.counts()["items"] - before
                    if items[variant].setdefault(str(n), got) != got or got == 0:
                        raise RuntimeError(f"{variant} at {n}: the stub received {got} items, "
                                           f"not the {items[variant][str(n)]} of the first round")
                    assert setup.db is not None
                    after[f"{variant}-{n}"] = counted(setup.db)
    finally:
        stub.close()
    variants = {v: x.summary(small, large) for v, x in samples.items()}
    plain = variants["plain"]["cpu_us_per_change"]
    return {"sizes": list(s.changes), "keyed_rows": s.keyed, "dead_letters": s.dead, "total_rows": s.total,
            "repeats": repeats, "variants": variants, "items_received": items, "after": after,
            "ratios": {f"{v}/plain": variants[v]["cpu_us_per_change"] / plain for v in ("dead", "nullkey")},
            "target": TARGET, "load_before": load_before, "load_after": list(os.getloadavg())}


def table(r: dict[str, Any]) -> str:
    """The result as console text."""
    small, large = r["sizes"]
    lines = [f"sync CPU per change, {small:,} to {large:,} changes, best of {r['repeats']} interleaved rounds",
             f"{'variant':<8} {'CPU µs/change':>14} {'range over rounds':>18} {'changes/s':>10}"]
    for v, c in r["variants"].items():
        lo, hi = c["cpu_us_range"]
        lines.append(f"{v:<8} {c['cpu_us_per_change']:>14.1f} {f'{lo:.1f}-{hi:.1f}':>18} "
                     f"{c['changes_per_s']:>10,.0f}")
    lines.append("ratios: " + "  ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items()))
    return "\n".join(lines)


def main() -> int:
    """Measure and print; with --json also write the raw results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--repeats", type=int, help="interleaved rounds (default 5, --quick 3)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    result = measure(args.quick, args.repeats)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
