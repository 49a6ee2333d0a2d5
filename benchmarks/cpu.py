"""Client CPU time per change (issue 11): `dynasync sync` and `dynasync
backfill` against a zero-work DynamoDB stand-in in its own process, beside a
bare boto3 loop and a raw signed-HTTP loop that do the same writes.

Each client runs as a subprocess, at two sizes. The child imports what it
needs (dynasync's CLI, boto3, botocore), notes the CPU time that took, then
does the work: dynasync through its CLI entry point, the loops through the
functions below. Its CPU time (user + system, from os.wait4) minus that
import time, at the large size minus at the small size, divided by the
difference in changes, is the marginal CPU per change: interpreter start-up,
imports and the command's own set-up cancel out (leaving the imports out
first only takes their jitter out of the difference). Runs are interleaved
(every client at every size in each round) and the best of the rounds is
taken per client and size.

Usage: cd benchmarks && ../.venv/bin/python cpu.py [--quick] [--sizes S L] [--repeats R] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve()
# sync_tracked: sync of the same rows under a key template, so that dynasync
# records (and looks up) the item each row wrote: what templates cost the pass.
CLIENTS = ("sync", "backfill", "boto3", "raw", "sync_tracked")
RATIOS = (("sync", "raw"), ("backfill", "raw"), ("sync", "boto3"), ("backfill", "boto3"),
          ("sync_tracked", "sync"))
TABLE = "stub-table"
TRACKED_TABLE = "stub-table-pk"  # the stand-in keys it by PK (S)
TRACKED = '\npartition_key = { name = "PK", template = "ITEM#{name}" }\n'

REGION = "us-east-1"
FULL = (5_000, 50_000)
QUICK = (2_000, 20_000)
REPEATS = 5
READY = "DYNASYNC_BENCH_READY"  # where a child writes "CPU seconds, monotonic time" once its imports are done
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": REGION,
       "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}


# --- the children: cpu.py --client KIND DB ENDPOINT, or cpu.py --cli COMMAND ARGS... ---

def ready() -> None:
    """Note, for the parent, the CPU time the imports took and when the work starts."""
    Path(os.environ[READY]).write_text(f"{time.process_time()} {time.monotonic()}")


def cli(argv: list[str]) -> int:
    """dynasync's console entry point, run after its imports are done."""
    import boto3  # noqa: F401
    import botocore.session  # noqa: F401

    from dynasync import cli as dynasync_cli

    ready()
    sys.argv = ["dynasync", *argv]  # main() with no argv: exactly what the console script runs
    return dynasync_cli.main()


def item(cols: list[str], row: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, v in zip(cols, row, strict=True):
        if v is None:
            continue
        if isinstance(v, str):
            out[name] = {"S": v}
        elif isinstance(v, bytes):
            out[name] = {"B": v}
        else:
            out[name] = {"N": repr(v) if isinstance(v, float) else str(v)}
    return out


def batches(db: Path) -> Iterator[list[dict[str, Any]]]:
    """Every row of `items` as PutRequests, 25 at a time."""
    conn = sqlite3.connect(db)
    cur = conn.execute("SELECT * FROM items")
    cols = [d[0] for d in cur.description]
    while rows := cur.fetchmany(25):
        yield [{"PutRequest": {"Item": item(cols, r)}} for r in rows]
    conn.close()


def boto3_loop(db: Path, endpoint: str) -> None:
    """The loop a user would write: boto3's batch_write_item, defaults, resending UnprocessedItems."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)
    for requests in batches(db):
        pending: Any = {TABLE: requests}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def b64(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def raw_loop(db: Path, endpoint: str) -> None:
    """The wire floor: json.dumps bodies, botocore's SigV4 signer, one keep-alive connection."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = botocore.session.get_session().get_credentials()
    assert credentials is not None
    signer = SigV4Auth(credentials, "dynamodb", REGION)
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.BatchWriteItem"}
    for requests in batches(db):
        pending: Any = {TABLE: requests}
        while pending:
            body = json.dumps({"RequestItems": pending}, default=b64).encode()
            request = AWSRequest(method="POST", url=endpoint + "/", data=body, headers=headers)
            signer.add_auth(request)
            conn.request("POST", "/", body, dict(request.headers.items()))
            pending = json.loads(checked(conn.getresponse())).get("UnprocessedItems") or {}
    conn.close()


def checked(resp: http.client.HTTPResponse) -> bytes:
    """The reply body, after the status and CRC32 checks a strict client makes."""
    payload = resp.read()
    if resp.status != 200 or zlib.crc32(payload) != int(resp.headers["x-amz-crc32"]):
        raise RuntimeError(f"bad reply {resp.status}: {payload[:200]!r}")
    return payload


# --- preparing databases and configs, and measuring one run ---

@dataclass
class Setup:
    """What one client run at one size needs: a command, and a database to restore first."""

    cmd: list[str]
    db: Path | None = None
    template: Path | None = None

    def restore(self) -> None:
        if self.db and self.template:
            for suffix in ("-wal", "-shm"):
                Path(f"{self.db}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.template, self.db)


def pending_changes(db: Path, n: int) -> None:
    """n changes waiting in the changelog: one update of each of n distinct keys."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("UPDATE items SET qty = qty + 1 WHERE id = ?", ((i,) for i in range(n)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def dynasync_setup(tmp: Path, kind: str, n: int, endpoint: str) -> Setup:
    """An initialised database (with n pending changes for sync) and a snapshot to restore it from."""
    from harness import make_db, run_dynasync, write_config

    db = tmp / f"{kind}-{n}.db"
    make_db(db, n)
    tracked = kind == "sync_tracked"
    config = write_config(tmp / f"{kind}-{n}.toml", db, endpoint, TRACKED_TABLE if tracked else TABLE)
    if tracked:
        config.write_text(config.read_text() + TRACKED)
    command = "backfill" if kind == "backfill" else "sync"
    run_dynasync("init", "--config", str(config))
    if tracked:  # the rows' items recorded, as a daemon that synced them before would have them
        run_dynasync("backfill", "--config", str(config))
    pending_changes(db, n if command == "sync" else 0)  # and checkpoint, so the snapshot is one file
    template = tmp / f"{kind}-{n}.template"
    shutil.copyfile(db, template)
    return Setup([sys.executable, str(HERE), "--cli", command, "--config", str(config)], db, template)


def loop_setup(tmp: Path, kind: str, n: int, endpoint: str) -> Setup:
    from harness import make_db

    db = tmp / f"rows-{n}.db"
    if not db.exists():
        make_db(db, n)
    return Setup([sys.executable, str(HERE), "--client", kind, str(db), endpoint])


def state_env(tmp: Path) -> dict[str, str]:
    """The children's environment, with dynasync's state directory (identity.py) inside `tmp`."""
    return {**os.environ, **ENV, "STATE_DIRECTORY": str(tmp / "state")}


def forget_seen(env: dict[str, str]) -> None:
    """Forget what dynasync saw of each database: a snapshot restored before each run is
    the same workload again, not a restore for dynasync to reconcile."""
    shutil.rmtree(env["STATE_DIRECTORY"], ignore_errors=True)


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process after its imports:
    its CPU time from os.wait4 less what it noted when ready()."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as note:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**env, READY: note.name})
        _, status, usage = os.wait4(p.pid, 0)
        end = time.monotonic()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
        imports, started = (float(x) for x in note.read().split())
    return usage.ru_utime + usage.ru_stime - imports, end - started


# --- the measurement ---

@dataclass
class Samples:
    """CPU and wall seconds of every round, per size, for one client."""

    cpu: dict[int, list[float]] = field(default_factory=dict)
    wall: dict[int, list[float]] = field(default_factory=dict)

    def add(self, n: int, cpu: float, wall: float) -> None:
        self.cpu.setdefault(n, []).append(cpu)
        self.wall.setdefault(n, []).append(wall)

    def summary(self, small: int, large: int) -> dict[str, Any]:
        d = large - small
        per_round = [(b - a) / d * 1e6 for a, b in zip(self.cpu[small], self.cpu[large], strict=True)]
        return {
            "cpu_us_per_change": (min(self.cpu[large]) - min(self.cpu[small])) / d * 1e6,
            "cpu_us_range": [min(per_round), max(per_round)],
            "changes_per_s": d / (min(self.wall[large]) - min(self.wall[small])),
            "cpu_s": {str(n): v for n, v in self.cpu.items()},
            "wall_s": {str(n): v for n, v in self.wall.items()},
        }


def setups(tmp: Path, sizes: tuple[int, int], endpoint: str) -> dict[tuple[str, int], Setup]:
    out = {}
    for n in sizes:
        for kind in CLIENTS:
            make = loop_setup if kind in ("boto3", "raw") else dynasync_setup
            out[kind, n] = make(tmp, kind, n, endpoint)
    return out


def measure(quick: bool, sizes: tuple[int, int] | None = None, repeats: int = REPEATS) -> dict[str, Any]:
    """Marginal CPU µs per change and changes/s of each client, and the CPU ratios between them."""
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    from stubproc import StubProcess

    small, large = sizes or (QUICK if quick else FULL)
    stub = StubProcess()
    samples = {kind: Samples() for kind in CLIENTS}
    try:
        with tempfile.TemporaryDirectory(prefix="cpubench-") as tmp:
            plan = setups(Path(tmp), (small, large), stub.endpoint)
            env = state_env(Path(tmp))
            for _ in range(repeats):
                for (kind, n), setup in plan.items():
                    setup.restore()
                    forget_seen(env)
                    before = stub.counts()["items"]
                    samples[kind].add(n, *run_once(setup.cmd, env))
                    if (got := stub.counts()["items"] - before) != n:
                        raise RuntimeError(f"{kind} at {n}: the stub received {got} items, not {n}")
    finally:
        stub.close()
    clients = {kind: s.summary(small, large) for kind, s in samples.items()}
    ratios = {f"{a}/{b}": clients[a]["cpu_us_per_change"] / clients[b]["cpu_us_per_change"] for a, b in RATIOS}
    return {"sizes": [small, large], "repeats": repeats, "clients": clients, "ratios": ratios}


def table(result: dict[str, Any]) -> str:
    small, large = result["sizes"]
    lines = [f"Client CPU per change against a zero-work stub in its own process "
             f"({small:,} and {large:,} changes, best of {result['repeats']} interleaved rounds)",
             "",
             f"{'client':<10} {'changes/s':>10} {'CPU µs/change':>14} {'range over rounds':>18}"]
    for kind, c in result["clients"].items():
        lo, hi = c["cpu_us_range"]
        lines.append(f"{kind:<10} {c['changes_per_s']:>10,.0f} {c['cpu_us_per_change']:>14.1f} "
                     f"{f'{lo:.1f}-{hi:.1f}':>18}")
    lines += ["", "CPU ratios: " + "  ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items())]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK[0]:,} and {QUICK[1]:,}")
    ap.add_argument("--sizes", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="override the two sizes")
    ap.add_argument("--repeats", type=int, default=REPEATS, help=f"interleaved rounds (default {REPEATS})")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--client", nargs=3, metavar=("KIND", "DB", "ENDPOINT"), help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--cli"]:
        return cli(sys.argv[2:])
    args = ap.parse_args()
    if args.client:
        import boto3  # noqa: F401
        import botocore.session  # noqa: F401

        kind, db, endpoint = args.client
        ready()
        (boto3_loop if kind == "boto3" else raw_loop)(Path(db), endpoint)
        return 0
    result = measure(args.quick, tuple(args.sizes) if args.sizes else None, args.repeats)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
