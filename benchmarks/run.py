"""Run the benchmarks, print a table, write docs/benchmarks.md and
docs/benchmarks.png, and compare with benchmarks/baseline.json.

Usage: scripts/bench [--quick] [--compare] [--update-baseline] [--rewrite] [--only STEP ...]

Each figure is a ratio or a bound measured side by side in the same run.
Only a full run of every step writes docs/; --quick, --only and --compare
write their report to a temporary directory instead, so a check never
rewrites the committed results. --quick --compare runs only the steps whose
figures the baseline checks in quick mode (the CPU per change benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bigrows
import compare
import cpu
import deadletters
import fleet
import flow
import harness
import local
import reconcile
from harness import DynamoDBLocal

DOCS = harness.ROOT / "docs"
Results = dict[str, Any]


class LazyLocal:
    """DynamoDB Local, started the first time a step asks for it."""

    def __init__(self) -> None:
        self._ddb: DynamoDBLocal | None = None

    def get(self) -> DynamoDBLocal:
        """The running DynamoDB Local."""
        if self._ddb is None:
            self._ddb = DynamoDBLocal()
        return self._ddb

    def stop(self) -> None:
        """Stop it, if it was started."""
        if self._ddb is not None:
            self._ddb.stop()


def steps(q: bool, ddb: LazyLocal, tmp: Path) -> dict[str, Callable[[], Any]]:
    """Every benchmark step by name, at small sizes when `q`. The ones against
    the zero-work stand-in come first, before DynamoDB Local's JVM starts."""

    def capture(fn: str, *args: Any) -> Any:
        import capture  # imports sqlite_chronicle: only when capture is measured

        return getattr(capture, fn)(*args)

    return {
        "cpu": lambda: cpu.measure(q),
        "deadletters": lambda: deadletters.measure(q),
        "oversize_small": lambda: bigrows.measure(q, "small"),
        "oversize_rows": lambda: bigrows.measure(q, "rows"),
        "oversize_memory": lambda: bigrows.measure(q, "memory"),
        "latency": lambda: flow.latency(tmp, 3000 if q else 20_000, [1, 4, 16] if q else [1, 2, 4, 8, 16, 32],
                                        1 if q else 2),
        "budget_200": lambda: flow.rate_limit(tmp, 200, 4 if q else 10),
        "budget_2000": lambda: flow.rate_limit(tmp, 2000, 4 if q else 10),
        "throttle": lambda: flow.throttle(tmp, 40_000 if q else 60_000, 2 if q else 3, 5),
        "throttle_start": lambda: flow.throttle_start(tmp, 20_000 if q else 40_000, 5),
        "fleet": lambda: fleet.measure(tmp, 100 if q else 1000, 20_000 if q else 200_000, 5 if q else 20,
                                       3 if q else 5),
        "reconcile": lambda: reconcile.measure(tmp, 20_000 if q else 200_000, 20, 3 if q else 5, 1 if q else 2),
        "capture": lambda: capture("measure", 2 if q else 5),
        "capture_shapes": lambda: capture("measure_shapes", q),
        "capture_templates": lambda: capture("measure_templates", q),
        "replay": lambda: local.replay(ddb.get(), tmp, 3000 if q else 30_000),
        "backfill": lambda: local.backfill(ddb.get(), tmp, [10_000, 30_000] if q else [100_000, 1_000_000]),
        "backlog": lambda: local.backlog(ddb.get(), tmp, [10_000, 30_000] if q else [100_000, 1_000_000]),
        "lag_watch": lambda: local.lag(ddb.get(), tmp, 5 if q else 20, True),
        "lag_nowatch": lambda: local.lag(ddb.get(), tmp, 5 if q else 20, False),
        "cost": lambda: local.cost(ddb.get(), tmp, 5000 if q else 30_000, 500),
    }


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import boto3

    java = shutil.which("java")
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()[0] \
        if java else "no java"
    try:
        ddb_local = harness.DynamoDBLocal.__module__ and Path(__import__("ddblocal").jar_dir()).name
    except RuntimeError:
        ddb_local = "not installed"
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "boto3": boto3.__version__,
        "java": version,
        "cpus": str(len(os.sched_getaffinity(0))),
        "platform": platform.platform(),
        "dynamodb_local": ddb_local,
    }


def measure(names: list[str], quick: bool) -> Results:
    """Run the named steps in order; their results by name."""
    results: Results = {"machine": machine(), "quick": quick, "date": time.strftime("%Y-%m-%d"),
                        "code": compare.code_version()}
    ddb = LazyLocal()
    tmp = Path(tempfile.mkdtemp(prefix="dynasync-bench-"))
    try:
        todo = steps(quick, ddb, tmp)
        for name in names:
            t = time.monotonic()
            results[name] = todo[name]()
            print(f"[{time.monotonic() - t:6.1f}s] {name}: {json.dumps(results[name], default=str)[:400]}",
                  flush=True)
    finally:
        ddb.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def parse() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for checking the suite itself")
    ap.add_argument("--compare", action="store_true",
                    help="compare with benchmarks/baseline.json; exit 1 if a figure degraded beyond its tolerance")
    ap.add_argument("--update-baseline", action="store_true",
                    help="record this full run's figures in benchmarks/baseline.json (tolerances kept)")
    ap.add_argument("--rewrite", action="store_true",
                    help="no new run: re-render docs/ from the raw results in docs/benchmarks.md")
    ap.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps (for developing the suite)")
    args = ap.parse_args()
    if args.update_baseline and (args.quick or args.only):
        ap.error("--update-baseline needs a full run (no --quick or --only)")
    return args


def main() -> int:
    """Measure (or reload), report, and compare."""
    args = parse()
    if args.rewrite:
        text = (DOCS / "benchmarks.md").read_text()
        results = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    else:
        names = list(steps(args.quick, LazyLocal(), Path()))
        if args.only:
            names = [n for n in names if n in args.only]
        elif args.quick and args.compare:
            names = [n for n in names if n in compare.quick_steps()]
        results = measure(names, args.quick)
    import report

    full = not args.quick and not args.only and not args.compare
    out = DOCS if full or args.rewrite or args.update_baseline else Path(tempfile.mkdtemp(prefix="bench-report-"))
    report.write(results, out)
    print(report.table(results))
    print(f"\nreport written to {out}")
    if args.update_baseline:
        compare.update(results)
        print(f"baseline written to {compare.BASELINE}")
    if args.compare:
        text, ok = compare.compare(results, compare.load(), args.quick)
        print("\n" + text)
        if not ok:
            print("\nA figure degraded beyond its tolerance (see above).", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    threading.excepthook = lambda a: None
    raise SystemExit(main())
