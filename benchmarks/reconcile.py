"""The reconcile benchmark (figure 11): while `dynasync run` reconciles a big
table after a migration, the application's commits into another table keep
reaching "DynamoDB" within their usual lag, in one database and in a fleet.

A database holds `big` (200,000 rows; --quick 20,000), copied to the target
by `dynasync backfill`, and a small `live`. Once `run` has settled, a
migration reshapes every row of big without firing a trigger
(`ALTER TABLE big ADD COLUMN cN INTEGER DEFAULT N`), so the daemon owes a
reconcile of big, which it takes in bounded steps between its passes. From
the migration until the reconcile is over, the application commits one new row
into `live` every 50 ms (in a fleet: into a random other database). The
stand-in (fleetstub.py, its own process, zero work) logs when each item
arrives; it finds no item for a BatchGetItem and returns an empty Scan page, so
the reconcile rewrites every row of big: its worst case.

The reconcile runs, as the stand-in sees it, from its first BatchGetItem of
big's target to its last Scan of it; it is over once `status` (the same
dynasync.status.status `dynasync status --json` prints, called in this process
so polling costs no process start) no longer reports it and that Scan came.
The lag judged is that of the commits made within that span. Before the
migration, the same commits for a few seconds give the lag without a reconcile.
"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import compare
import fleet
from fleetstub import FleetStub

BIG = "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)"
LIVE = "CREATE TABLE live (id INTEGER PRIMARY KEY, v TEXT)"
SMALL = 3  # rows of live, and of big in a fleet's other databases
RATE = 20.0  # the application's commits per second into live
POLL_S = 0.5  # how often the reconcile's progress is asked
START_S = 60.0  # the migration's reconcile must have started by then
TIMEOUT_S = 900.0  # and be over by then


def make_db(path: Path, big: int) -> None:
    """A WAL database with `big` rows in big and SMALL in live."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(BIG)
    conn.execute(LIVE)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO big VALUES (?, ?)",
                     ((i, f"row {i} of a table a migration reshapes") for i in range(big)))
    conn.executemany("INSERT INTO live VALUES (?, ?)", ((i, "a small table") for i in range(SMALL)))
    conn.execute("COMMIT")
    conn.close()


def write_config(path: Path, source: str, endpoint: str, targets: str) -> Path:
    """A config syncing big and live to `{targets}-big` and `{targets}-live`; `source` is
    the [source] line. The stand-in answers any DescribeTable, so create_tables stays off."""
    path.write_text("\n".join([
        f"[source]\n{source}",
        f'[dynamodb]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\ncreate_tables = false',
        f'[[tables]]\nsource = "big"\ntarget = "{targets}-big"',
        f'[[tables]]\nsource = "live"\ntarget = "{targets}-live"',
    ]) + "\n")
    return path


def migrate(db: Path, n: int) -> float:
    """Reshape every row of big without a trigger firing; time.monotonic right after."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.execute(f"ALTER TABLE big ADD COLUMN c{n} INTEGER DEFAULT {n}")
        return time.monotonic()
    finally:
        conn.close()


def commit(db: Path, key: int) -> float:
    """Insert one row into live; time.monotonic right after the commit."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.execute("INSERT INTO live VALUES (?, ?)", (key, "a live change"))
        return time.monotonic()
    finally:
        conn.close()


@dataclass
class Tenant:
    """A database the application commits into, and its live table's target."""

    db: Path
    target: str


class Application:
    """The application's commits: one new row into live every 1/RATE s, into a random tenant."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self.tenants = tenants
        self.keys = fleet.Keys()
        self.rng = random.Random(11)
        self.made: dict[tuple[str, int], float] = {}  # (target, id) -> commit time

    def commit(self) -> None:
        """One commit, into a random tenant."""
        tenant, key = self.rng.choice(self.tenants), self.keys()
        self.made[(tenant.target, key)] = commit(tenant.db, key)

    def paced(self, done: Callable[[float], bool]) -> float:
        """Commit at RATE until `done(seconds since the start)`, asked after each commit;
        the start (time.monotonic)."""
        start, i = time.monotonic(), 0
        while True:
            self.commit()
            i += 1
            if done(time.monotonic() - start):
                return start
            time.sleep(max(0.0, start + i / RATE - time.monotonic()))


class Progress:
    """The reconcile of big as `dynasync status` reports it, for one database (of a fleet)."""

    def __init__(self, config_path: Path, db: Path | None) -> None:
        from dynasync import config

        cfg = config.load(config_path)
        self.cfg = cfg.for_database(db) if db is not None else cfg

    def __call__(self) -> dict[str, Any] | None:
        """tables.big.reconcile: its phase and counts while under way, else None."""
        from dynasync.app import App
        from dynasync.status import status

        with App(self.cfg) as app:
            return status(app).tables["big"].reconcile


@dataclass
class Setup:
    """One benchmark's stand-in, run process, databases, and how to follow big's reconcile."""

    stub: FleetStub
    run: fleet.RunProcess
    app: Application
    big_db: Path
    big_target: str
    progress: Progress


def reconcile_window(setup: Setup, migrated: float) -> tuple[float, float, int, int]:
    """(first BatchGetItem, last Scan, requests of each) of big's target after `migrated`."""
    reads = setup.stub.reads()
    gets = [t for t in reads["BatchGetItem"].get(setup.big_target, []) if t >= migrated]
    scans = [t for t in reads["Scan"].get(setup.big_target, []) if t >= migrated]
    return (min(gets) if gets else migrated), (max(scans) if scans else 0.0), len(gets), len(scans)


def one_reconcile(setup: Setup, rows: int, n: int) -> tuple[dict[str, Any], dict[tuple[str, int], float]]:
    """Migrate big (the n-th time) and commit into live until its reconcile is over;
    the reconcile's figures, and the commits made while it ran."""
    written = setup.stub.counts()["tables"].get(setup.big_target, [0])[0]
    cpu = setup.run.cpu()
    migrated = migrate(setup.big_db, n)
    seen: list[dict[str, Any]] = []

    def over(elapsed: float) -> bool:
        if elapsed < len(seen) * POLL_S:  # len(seen) counts the polls so far
            return False
        setup.run.check()
        job = setup.progress()
        seen.append(job or {})
        if job is None and reconcile_window(setup, migrated)[3]:
            return True
        if elapsed > (TIMEOUT_S if any(seen) else START_S):
            raise RuntimeError(f"the reconcile of {rows:,} rows did not {'end' if any(seen) else 'start'} "
                               f"within {elapsed:.0f} s of the migration")
        return False

    setup.app.paced(over)
    cpu = setup.run.cpu() - cpu
    start, end, gets, scans = reconcile_window(setup, migrated)
    during = {k: t for k, t in setup.app.made.items() if start <= t <= end}
    polled = [job for job in seen if job]
    return {
        "started_after_s": start - migrated, "seconds": end - start, "rows_per_s": rows / (end - start),
        "items_written": setup.stub.counts()["tables"][setup.big_target][0] - written,
        "batch_gets": gets, "scans": scans, "status_polls_under_way": len(polled),
        "last_status": polled[-1] if polled else None,
        "run_cpu_pct": 100 * cpu / (time.monotonic() - migrated),
    }, during


def measure_one(setup: Setup, rows: int, quiet_s: float, rounds: int) -> dict[str, Any]:
    """The lag of live without a reconcile, then during `rounds` reconciles of big."""
    setup.app.made.clear()
    setup.app.paced(lambda elapsed: elapsed >= quiet_s)
    quiet = dict(setup.app.made)
    out: dict[str, Any] = {"rows": rows, "commits_per_s": RATE, "rounds": []}
    out["quiet"] = fleet.summary(fleet.arrivals(setup.stub, quiet, 15.0), _arrived(setup.stub, quiet))
    during: dict[tuple[str, int], float] = {}
    for n in range(1, rounds + 1):
        setup.app.made.clear()
        figures, committed = one_reconcile(setup, rows, n)
        figures["lag"] = fleet.summary(fleet.arrivals(setup.stub, committed, 15.0),
                                       _arrived(setup.stub, committed))
        out["rounds"].append(figures)
        during.update(committed)
        time.sleep(1.0)  # the daemon idle again before the next migration
    out["during"] = fleet.summary(fleet.arrivals(setup.stub, during, 15.0), _arrived(setup.stub, during))
    return out


def _arrived(stub: FleetStub, committed: dict[tuple[str, int], float]) -> int:
    return sum(1 for k in committed if k in stub.seen)


def single(work: Path, rows: int, quiet_s: float, rounds: int) -> dict[str, Any]:
    """One database: big reconciled while live takes the application's commits."""
    work.mkdir()
    db = work / "app.db"
    make_db(db, rows)
    stub = FleetStub(count_only=("rec-big",))
    run: fleet.RunProcess | None = None
    out: dict[str, Any] = {}
    try:
        config = write_config(work / "single.toml", f'database = "{db}"', stub.endpoint, "rec")
        out["setup_s"] = {"init": fleet.cli("init", config), "backfill": fleet.cli("backfill", config)}
        run = fleet.RunProcess(config, work / "run.log")
        out["settle_s"] = run.settle(60)
        setup = Setup(stub, run, Application([Tenant(db, "rec-live")]), db, "rec-big", Progress(config, None))
        out.update(measure_one(setup, rows, quiet_s, rounds))
        run.check()
    finally:
        if run is not None:
            out["log_lines"], out["log_warnings"] = run.stop(), warnings(run.log)
        stub.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def in_fleet(work: Path, rows: int, tenants: int, quiet_s: float, rounds: int) -> dict[str, Any]:
    """A fleet: big reconciled in one database while `tenants` others take the commits."""
    root = work / "tenants"
    root.mkdir(parents=True)
    template = work / "template.db"
    make_db(template, SMALL)
    names = [f"t{i:03d}" for i in range(tenants)]
    for name in names:
        shutil.copyfile(template, root / f"{name}.db")  # the WAL mode is in its header
    make_db(root / "big.db", rows)
    stub = FleetStub(count_only=tuple(f"{name}-big" for name in ["big", *names]))
    run: fleet.RunProcess | None = None
    out: dict[str, Any] = {"databases": tenants + 1}
    try:
        source = f'databases = "{root}/*.db"'
        config = write_config(work / "fleet.toml", source, stub.endpoint, "{database}")
        out["setup_s"] = {"init": fleet.cli("init", config), "backfill": fleet.cli("backfill", config)}
        run = fleet.RunProcess(config, work / "run.log")
        out["settle_s"] = run.settle(60 + tenants * 0.2)
        app = Application([Tenant(root / f"{name}.db", f"{name}-live") for name in names])
        setup = Setup(stub, run, app, root / "big.db", "big-big", Progress(config, root / "big.db"))
        out.update(measure_one(setup, rows, quiet_s, rounds))
        run.check()
    finally:
        if run is not None:
            out["log_lines"], out["log_warnings"] = run.stop(), warnings(run.log)
        stub.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def measure(tmp: Path, rows: int, tenants: int, quiet_s: float, rounds: int) -> dict[str, Any]:
    """The whole reconcile benchmark: in one database, then in a fleet."""
    return {"date": time.strftime("%Y-%m-%d"), "code": compare.code_version(), "load_before": _load(),
            "single": single(tmp / "reconcile-single", rows, quiet_s, rounds),
            "fleet": in_fleet(tmp / "reconcile-fleet", rows, tenants, quiet_s, rounds),
            "load_after": _load()}


def warnings(log: Path) -> list[str]:
    """The distinct events of the run's warnings and errors (one expected: the reconcile's own)."""
    text = log.read_text(errors="replace")
    return sorted(set(re.findall(r'level=(?:warning|error) .*?event="([^"]*)"', text)))


def _load() -> list[float]:
    """The machine's load averages (1, 5, 15 minutes): other work on its cores."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
