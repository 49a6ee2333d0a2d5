"""The fleet benchmark (issue 12): one `dynasync run` over many small
databases (`[source] databases = "<dir>/*.db"`, one target per database),
against a zero-work DynamoDB stand-in in its own process that logs when each
item arrives (fleetstub.py).

* Setup: the files are made with sqlite3, then `dynasync init` and
  `dynasync backfill` run once over the fleet through the CLI; `run` starts
  and is settled when its CPU stays under 5% of a core for six 1 s windows.
* Memory (VmRSS, and the peak VmHWM) and idle CPU of the run process.
* Commit-to-arrival latency when 50 random databases each commit one row,
  all at once and spread over 2.5 s, for a few rounds of each.
* The same latency for one commit per 50 ms into random databases while a
  new database of one big table, moved into the directory, is initialized
  and copied in the background; the copy's duration and rows/s.

Commit times are time.monotonic right after the commit returns; arrival
times are the stand-in's, on the same system-wide clock.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import harness
from fleetstub import FleetStub

DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)"
ROWS = 3  # rows of each small database
BIG = ("big0", "big1", "big2")  # the databases added live; their targets only counted by the stand-in
TARGET = "fleet-{database}"
QUIET = 0.05  # settled: the run process under this share of a core...
QUIET_WINDOWS = 6  # ...for this many 1 s windows in a row: longer than the 5 s interval, so a stat ran
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_db(path: Path, rows: int) -> None:
    """A WAL database with `rows` rows in items."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(DDL)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?)",
                     ((i, f"row {i} of a tenant, with a little text") for i in range(rows)))
    conn.execute("COMMIT")
    conn.close()


def make_fleet(root: Path, n: int) -> list[str]:
    """n databases of ROWS rows in root: one made with sqlite3, copied byte for
    byte (the WAL mode is in its header), which is much faster than n inserts."""
    root.mkdir()
    template = root.parent / "template.db"
    make_db(template, ROWS)
    names = [f"t{i:04d}" for i in range(n)]
    for name in names:
        shutil.copyfile(template, root / f"{name}.db")
    template.unlink()
    return names


def write_config(path: Path, root: Path, endpoint: str) -> Path:
    """A fleet config: every *.db in root, one target per database. The
    stand-in answers any DescribeTable, so create_tables stays off."""
    path.write_text("\n".join([
        f'[source]\ndatabases = "{root}/*.db"',
        f'[dynamodb]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\ncreate_tables = false',
        f'[[tables]]\nsource = "items"\ntarget = "{TARGET}"',
    ]) + "\n")
    return path


def cli(command: str, config: Path) -> float:
    """Wall seconds of `dynasync COMMAND --config CONFIG` over the fleet, start-up included."""
    t = time.monotonic()
    harness.run_dynasync(command, "--config", str(config))
    return time.monotonic() - t


class RunProcess:
    """`dynasync run` in the background, with its CPU and memory from /proc."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([harness.DYNASYNC, "run", "--config", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def cpu(self) -> float:
        """CPU seconds (user + system) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak RSS), in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        fields = (line.split(":", 1) for line in status)
        kib = {k: int(v.split()[0]) for k, v in fields if k in ("VmRSS", "VmHWM")}
        return {"rss_mib": kib["VmRSS"] / 1024, "hwm_mib": kib["VmHWM"] / 1024}

    def check(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dynasync run exited with {self.proc.returncode}:\n{tail}")

    def settle(self, timeout: float) -> float:
        """Wait until the process is quiet; the seconds from its start to the quiet windows' start."""
        quiet, deadline = 0, time.monotonic() + timeout
        while quiet < QUIET_WINDOWS:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"dynasync run did not settle within {timeout:g} s")
            before = self.cpu()
            time.sleep(1.0)
            quiet = quiet + 1 if self.cpu() - before < QUIET else 0
        return time.monotonic() - QUIET_WINDOWS - self.started

    def idle_cpu(self, seconds: float) -> float:
        """Its CPU over `seconds` without writes, in % of one core."""
        before, t = self.cpu(), time.monotonic()
        time.sleep(seconds)
        return 100 * (self.cpu() - before) / (time.monotonic() - t)

    def stop(self) -> dict[str, int]:
        """SIGTERM and wait; the log lines by level, for anything unexpected."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.log.read_text(errors="replace")
        return {"warning": text.count("level=warning"), "error": text.count("level=error"),
                "traceback": text.count("Traceback")}


def commit(root: Path, name: str, key: int) -> float:
    """Insert one row into a database; time.monotonic right after the commit."""
    conn = sqlite3.connect(root / f"{name}.db", isolation_level=None, timeout=10)
    try:
        conn.execute("INSERT INTO items VALUES (?, ?)", (key, "a live change"))
        return time.monotonic()
    finally:
        conn.close()


def arrivals(stub: FleetStub, committed: dict[tuple[str, int], float], timeout: float) -> list[float]:
    """Wait for the committed rows to reach the stand-in; their latencies in
    seconds (a row that never arrived counts as the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = stub.poll()
        if all(k in seen for k in committed):
            break
        time.sleep(0.1)
    seen = stub.poll()
    return [seen[k] - t if k in seen else timeout for k, t in committed.items()]


def summary(delays: list[float], arrived: int) -> dict[str, Any]:
    """p50, p99 and max in ms of commit-to-arrival latencies, and how many arrived."""
    q = statistics.quantiles(delays, n=100, method="inclusive")
    return {"commits": len(delays), "arrived": arrived, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "max_ms": max(delays) * 1000}


class Keys:
    """Fresh row ids, so that every commit is a new item the stand-in logs once."""

    def __init__(self) -> None:
        self.next = 1_000_000

    def __call__(self) -> int:
        self.next += 1
        return self.next


def burst(stub: FleetStub, root: Path, names: list[str], keys: Keys, rounds: int, spread: float
          ) -> dict[str, Any]:
    """`rounds` rounds of 50 random databases committing one row each, over
    `spread` seconds (0: one after the other, at once); their latencies."""
    rng = random.Random(12)
    delays: list[float] = []
    arrived = 0
    for _ in range(rounds):
        committed: dict[tuple[str, int], float] = {}
        start = time.monotonic()
        for i, name in enumerate(rng.sample(names, 50)):
            time.sleep(max(0.0, start + i * spread / 50 - time.monotonic()))
            key = keys()
            committed[(TARGET.format(database=name), key)] = commit(root, name, key)
        got = arrivals(stub, committed, 15.0)
        arrived += sum(1 for k in committed if k in stub.seen)
        delays += got
        time.sleep(1.0)  # let the fleet go idle between rounds
    return {"rounds": rounds, "spread_s": spread, **summary(delays, arrived)}


def live_copy(stub: FleetStub, tmp: Path, root: Path, names: list[str], keys: Keys, rows: int, big: str
              ) -> tuple[dict[str, Any], dict[tuple[str, int], float]]:
    """Move a new database `big` of `rows` rows into the fleet's directory and,
    until the stand-in has counted every row of its copy, commit one row per
    50 ms into random other databases; the copy's pace, and those commits."""
    staged = tmp / f"{big}.db"
    t = time.monotonic()
    make_db(staged, rows)
    made = time.monotonic() - t
    target, rng = TARGET.format(database=big), random.Random(big)
    committed: dict[tuple[str, int], float] = {}
    moved = time.monotonic()
    os.rename(staged, root / f"{big}.db")  # whole, as a deploy would
    deadline, copied, i = moved + 600, 0, 0
    while copied < rows:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the live copy did not finish in 600 s ({copied:,}/{rows:,} rows)")
        name = rng.choice(names)
        key = keys()
        committed[(TARGET.format(database=name), key)] = commit(root, name, key)
        i += 1
        time.sleep(max(0.0, moved + i * 0.05 - time.monotonic()))
        if i % 10 == 0:
            copied = stub.counts()["tables"].get(target, [0])[0]
    items, first, last = stub.counts()["tables"][target]
    during = {k: t for k, t in committed.items() if t <= last}  # not those after the copy's end
    return {"made_s": made, "items": items, "first_item_s": first - moved, "copy_s": last - moved,
            "rows_per_s": rows / (last - moved)}, during


def live_copies(stub: FleetStub, tmp: Path, root: Path, names: list[str], keys: Keys, rows: int, copies: int
                ) -> dict[str, Any]:
    """`copies` databases of `rows` rows added live one after the other (live_copy);
    each copy's pace, and the latency of every commit made during them."""
    out: dict[str, Any] = {"rows": rows, "copies": []}
    during: dict[tuple[str, int], float] = {}
    for big in BIG[:copies]:
        copy, committed = live_copy(stub, tmp, root, names, keys, rows, big)
        out["copies"].append(copy)
        during.update(committed)
        time.sleep(1.0)  # the fleet idle again before the next one
    delays = arrivals(stub, during, 15.0)
    out["others"] = summary(delays, sum(1 for k in during if k in stub.seen))
    return out


def measure(tmp: Path, n: int, big: int, idle_s: float, rounds: int, copies: int = 2) -> dict[str, Any]:
    """The whole fleet benchmark: n databases, then `copies` of `big` rows added live one by one."""
    work = tmp / "fleet"
    work.mkdir()
    root = work / "tenants"
    out: dict[str, Any] = {"databases": n, "rows_each": ROWS}
    stub = FleetStub(count_only=tuple(TARGET.format(database=b) for b in BIG))
    run: RunProcess | None = None
    try:
        t = time.monotonic()
        names = make_fleet(root, n)
        out["setup_s"] = {"files": time.monotonic() - t}
        config = write_config(work / "fleet.toml", root, stub.endpoint)
        out["setup_s"]["init"] = cli("init", config)
        out["setup_s"]["backfill"] = cli("backfill", config)
        describes = stub.counts()["describes"]
        run = RunProcess(config, work / "run.log")
        out["settle_s"] = run.settle(60 + n * 0.2)
        out["memory_settled"] = run.memory()
        before = stub.counts()
        out["run_describes"] = before["describes"] - describes
        out["idle"] = {"seconds": idle_s, "cpu_pct": run.idle_cpu(idle_s)}
        out["idle"]["requests"] = stub.counts()["requests"] - before["requests"]
        keys = Keys()
        out["at_once"] = burst(stub, root, names, keys, rounds, 0.0)
        out["spread"] = burst(stub, root, names, keys, rounds, 2.5)
        out["memory_after_commits"] = run.memory()
        out["live"] = live_copies(stub, work, root, names, keys, big, copies)
        out["memory_after_copy"] = run.memory()
        run.check()
    finally:
        if run is not None:
            out["log_lines"] = run.stop()
        stub.close()
        shutil.rmtree(work, ignore_errors=True)
    out["peak_mib"] = out["memory_after_copy"]["hwm_mib"]
    out["settled_peak_mib"] = out["memory_settled"]["hwm_mib"]
    return out
