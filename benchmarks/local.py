"""The benchmarks against DynamoDB Local (started by run.py): replay and
backfill beside a hand-written loop, backfill and backlog memory, lag, and
write requests per change."""

from __future__ import annotations

import json
import signal
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import harness
from harness import DYNASYNC, DynamoDBLocal, FaultProxy, make_db, new_table, run_dynasync, write_config


def pending_changes(db: Path, n: int, keys: int | None = None) -> None:
    """n changes waiting in the changelog: updates over `keys` keys (all distinct by default)."""
    keys = keys or n
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for i in range(n):
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (i % keys,))
    conn.execute("COMMIT")
    conn.close()


def fresh(tmp: Path, name: str, rows: int, endpoint: str, **cfg: dict[str, Any]) -> tuple[Path, Path, str]:
    """A database of `rows` rows with its own new table, initialised; (db, config, table)."""
    db = tmp / f"{name}.db"
    make_db(db, rows)
    target = new_table(endpoint)
    config = write_config(tmp / f"{name}.toml", db, endpoint, target, **cfg)
    run_dynasync("init", "--config", str(config))
    return db, config, target


def replay(ddb: DynamoDBLocal, tmp: Path, n: int, rounds: int = 2) -> dict[str, Any]:
    """Best of `rounds` interleaved runs of each side, after a warm-up: the
    first requests a fresh JVM serves are several times slower."""
    warm = tmp / "warmup.db"
    make_db(warm, n)
    harness.baseline_loop(warm, ddb.endpoint, new_table(ddb.endpoint))
    best_dyn = best_base = float("inf")
    rss = 0
    for r in range(rounds):
        db, config, _ = fresh(tmp, f"replay-{r}", n, ddb.endpoint)
        pending_changes(db, n)
        secs, rss = run_dynasync("sync", "--config", str(config))
        best_dyn = min(best_dyn, secs)
        best_base = min(best_base, harness.baseline_loop(db, ddb.endpoint, new_table(ddb.endpoint)))
    return {"changes": n, "rounds": rounds, "dynasync_per_s": n / best_dyn, "baseline_per_s": n / best_base,
            "ratio": best_base / best_dyn, "rss_mib": rss / 1024}


def backfill(ddb: DynamoDBLocal, tmp: Path, sizes: list[int]) -> dict[str, Any]:
    """Backfill rows/s and peak RSS at each size; the hand-written loop's rows/s at the first."""
    out: dict[str, Any] = {"sizes": sizes, "rows_per_s": [], "rss_mib": []}
    for n in sizes:
        db, config, _ = fresh(tmp, f"backfill-{n}", n, ddb.endpoint)
        secs, rss = run_dynasync("backfill", "--config", str(config))
        out["rows_per_s"].append(n / secs)
        out["rss_mib"].append(rss / 1024)
        if n == sizes[0]:
            out["baseline_rows_per_s"] = n / harness.baseline_loop(db, ddb.endpoint, new_table(ddb.endpoint))
        (tmp / f"backfill-{n}.db").unlink()
    out["rss_growth"] = out["rss_mib"][-1] / out["rss_mib"][0]
    out["speed_ratio"] = out["rows_per_s"][0] / out["baseline_rows_per_s"]
    return out


def backlog(ddb: DynamoDBLocal, tmp: Path, sizes: list[int]) -> dict[str, Any]:
    """Peak RSS and changes/s of one `sync` of a backlog of each size."""
    out: dict[str, Any] = {"sizes": sizes, "rss_mib": [], "changes_per_s": []}
    for n in sizes:
        db, config, _ = fresh(tmp, f"backlog-{n}", n, ddb.endpoint)
        pending_changes(db, n)
        secs, rss = run_dynasync("sync", "--config", str(config))
        out["rss_mib"].append(rss / 1024)
        out["changes_per_s"].append(n / secs)
        (tmp / f"backlog-{n}.db").unlink()
    out["rss_growth"] = out["rss_mib"][-1] / out["rss_mib"][0]
    return out


def lag(ddb: DynamoDBLocal, tmp: Path, seconds: float, watch: bool) -> dict[str, Any]:
    """Commit-to-DynamoDB delay under a steady 50 commits/s, `run` at its
    defaults. The proxy stamps each write when DynamoDB's reply goes back."""
    proxy = FaultProxy(ddb.port)
    arrived: dict[int, float] = {}
    requests = [0]

    def on_reply(op: str, body: bytes, at: float) -> None:
        if op != "BatchWriteItem":
            return
        requests[0] += 1
        for reqs in json.loads(body)["RequestItems"].values():
            for r in reqs:
                item = r.get("PutRequest", {}).get("Item") or r["DeleteRequest"]["Key"]
                arrived.setdefault(int(item["id"]["N"]), at)

    proxy.on_reply = on_reply
    db, config, _ = fresh(tmp, f"lag-{watch}", 0, proxy.endpoint, sync={"watch": watch})
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed: dict[int, float] = {}
    try:
        time.sleep(2)
        conn = sqlite3.connect(db, isolation_level=None)
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            conn.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)", harness.row(i))
            committed[i] = time.time()
            i += 1
            time.sleep(max(0.0, start + i / 50 - time.monotonic()))
        conn.close()
        deadline = time.monotonic() + 15
        while len(arrived) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        proxy.close()
    delays = sorted(arrived[k] - committed[k] for k in committed if k in arrived)
    q = statistics.quantiles(delays, n=100)
    return {"watch": watch, "commits": len(committed), "arrived": len(delays),
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "requests_per_change": requests[0] / len(committed)}


def cost(ddb: DynamoDBLocal, tmp: Path, changes: int, keys: int) -> dict[str, Any]:
    """BatchWriteItem requests per change when `changes` updates hit `keys` keys."""
    proxy = FaultProxy(ddb.port)
    try:
        db, config, _ = fresh(tmp, "cost", keys, proxy.endpoint)
        pending_changes(db, changes, keys)
        before = proxy.counts["op:BatchWriteItem"]
        run_dynasync("sync", "--config", str(config))
        writes = proxy.counts["op:BatchWriteItem"] - before
    finally:
        proxy.close()
    return {"changes": changes, "keys": keys, "requests": writes, "requests_per_change": writes / changes}
