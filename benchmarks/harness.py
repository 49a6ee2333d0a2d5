"""Shared pieces: DynamoDB Local, sample databases, configs, the hand-written
baseline loop, and running dynasync in a subprocess with its peak RSS."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ddblocal import DynamoDBLocal  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

DYNASYNC = str(Path(sys.executable).parent / "dynasync")
DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT)"

os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")

__all__ = ["DynamoDBLocal", "FaultProxy"]


def row(i: int) -> tuple[int, str, int, float, str]:
    return (i, f"item {i}", i % 100, i * 0.25, "a note of moderate length for realism")


def client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


def make_db(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(DDL)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", (row(i) for i in range(rows)))
    conn.execute("COMMIT")
    conn.close()


def write_config(path: Path, db: Path, endpoint: str, target: str, **extra: dict[str, Any]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "dynamodb": {"endpoint_url": endpoint, "region": "us-east-1", "create_tables": True},
        "sync": {},
        "backfill": {},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    lines = [f'[source]\ndatabase = "{db}"']
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    lines.append(f'[[tables]]\nsource = "items"\ntarget = "{target}"')
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def new_table(endpoint: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    c = client(endpoint)
    c.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    return name


def drop_table(endpoint: str, name: str) -> None:
    client(endpoint).delete_table(TableName=name)


def run_dynasync(*args: str) -> tuple[float, int]:
    """Run the real CLI; return (seconds of work, peak RSS in KiB of that
    process alone). The seconds are the ones the command reports ("in 1.23s"),
    which leave out interpreter start-up, as the baseline's timing does."""
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen([DYNASYNC, *args], stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        err = p.stderr.read().decode() if p.stderr else ""
        raise RuntimeError(f"dynasync {' '.join(args)} failed: {err}")
    found = re.findall(r"in (\d+\.\d+)s", text)
    return (float(found[-1]) if found else 0.0), int(usage.ru_maxrss)


def baseline_loop(db: Path, endpoint: str, table: str) -> float:
    """The hand-written loop a user would write instead: read every row, build
    items, BatchWriteItem 25 at a time, resend UnprocessedItems."""
    c = client(endpoint)
    conn = sqlite3.connect(db)
    start = time.perf_counter()
    cur = conn.execute("SELECT * FROM items")
    cols = [d[0] for d in cur.description]
    while True:
        rows = cur.fetchmany(25)
        if not rows:
            break
        requests = []
        for r in rows:
            item = {}
            for name, v in zip(cols, r, strict=True):
                if v is None:
                    continue
                if isinstance(v, str):
                    item[name] = {"S": v}
                elif isinstance(v, bytes):
                    item[name] = {"B": v}
                else:
                    item[name] = {"N": repr(v) if isinstance(v, float) else str(v)}
            requests.append({"PutRequest": {"Item": item}})
        pending = {table: requests}
        while pending:
            pending = c.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    conn.close()
    return time.perf_counter() - start
