"""A zero-work DynamoDB stand-in, in its own process, that records when each
item arrives, for the fleet and reconcile benchmarks (benchmarks/fleet.py,
benchmarks/reconcile.py).

Unlike stubproc.py, which counts items without parsing, this one parses every
BatchWriteItem body, so that a row committed in SQLite can be matched to the
moment its item reached "DynamoDB": each item's table and "id" key value are
logged with the request's arrival time (time.monotonic, which is system-wide on
Linux, so the parent can compare it with its own commit times). Tables named
with --count-only are only counted (items, first and last arrival), so a bulk
copy does not fill the log. DescribeTable answers every table as ACTIVE and
keyed by a single N attribute "id". BatchGetItem finds no item and Scan returns
one empty page (valid answers: a reconcile, which reads items back, then finds
every item missing and writes it, its worst case); the arrival time of each is
logged per table, so the parent sees when a reconcile ran.

GET /arrivals?since=N returns the logged items from index N on
({"next": M, "items": [[time, table, id], ...]}); GET /counts returns
{"requests", "items", "describes", "tables": {table: [items, first, last]}};
GET /reads returns {"BatchGetItem": {table: [time, ...]}, "Scan": {...}}.
Neither is DynamoDB's API. Binds 127.0.0.1 only; prints its port, then serves
until killed.

Usage: python fleetstub.py [--count-only TABLE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stubproc import JsonHandler, describe

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Log:
    """What arrived, shared by the handler threads."""

    def __init__(self, count_only: set[str]) -> None:
        self.count_only = count_only
        self.lock = threading.Lock()
        self.items: list[list[Any]] = []  # [time, table, id] of every item of a logged table
        self.tables: dict[str, list[Any]] = {}  # table -> [items, first arrival, last arrival]
        self.requests = 0
        self.describes = 0
        self.reads: dict[str, dict[str, list[float]]] = {"BatchGetItem": {}, "Scan": {}}  # op -> table -> times

    def add(self, now: float, raw: bytes) -> None:
        """Record one BatchWriteItem's items."""
        body = json.loads(raw)["RequestItems"]
        logged: list[list[Any]] = []
        counted: list[tuple[str, int]] = []
        for table, requests in body.items():
            counted.append((table, len(requests)))
            if table in self.count_only:
                continue
            for r in requests:
                key = r["PutRequest"]["Item"] if "PutRequest" in r else r["DeleteRequest"]["Key"]
                logged.append([now, table, int(key["id"]["N"])])
        with self.lock:
            self.requests += 1
            self.items.extend(logged)
            for table, n in counted:
                entry = self.tables.setdefault(table, [0, now, now])
                entry[0] += n
                entry[2] = now

    def read(self, now: float, op: str, tables: list[str]) -> None:
        """Record one BatchGetItem or Scan of these tables."""
        with self.lock:
            for table in tables:
                self.reads[op].setdefault(table, []).append(now)

    def arrivals(self, since: int) -> dict[str, Any]:
        """The logged items from index `since` on, and the index after them."""
        with self.lock:
            return {"next": len(self.items), "items": self.items[since:]}

    def counts(self) -> dict[str, Any]:
        """Requests, items, DescribeTable calls, and per table [items, first, last]."""
        with self.lock:
            return {"requests": self.requests, "items": sum(e[0] for e in self.tables.values()),
                    "describes": self.describes, "tables": dict(self.tables)}

    def read_times(self) -> dict[str, dict[str, list[float]]]:
        """When each BatchGetItem and Scan arrived, by operation and table."""
        with self.lock:
            return {op: {table: list(times) for table, times in by_table.items()}
                    for op, by_table in self.reads.items()}


def handler(log: Log) -> type[BaseHTTPRequestHandler]:
    """The request handler class, recording into `log`."""
    class Handler(JsonHandler):
        request_id = "fleetstub"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            now = time.monotonic()
            op = self.headers.get("X-Amz-Target", "").split(".")[-1]
            if op == "BatchWriteItem":
                log.add(now, raw)
                self.reply(200, b'{"UnprocessedItems":{}}')
            elif op == "DescribeTable":
                with log.lock:
                    log.describes += 1
                self.reply(200, json.dumps(describe(json.loads(raw)["TableName"])).encode())
            elif op == "BatchGetItem":
                tables = list(json.loads(raw)["RequestItems"])
                log.read(now, op, tables)
                self.reply(200, json.dumps({"Responses": {t: [] for t in tables}, "UnprocessedKeys": {}}).encode())
            elif op == "Scan":
                log.read(now, op, [json.loads(raw)["TableName"]])
                self.reply(200, b'{"Items":[],"Count":0,"ScannedCount":0}')
            else:
                print(f"fleetstub: unsupported operation {op!r}", file=sys.stderr)
                self.reply(400, json.dumps({
                    "__type": "com.amazon.coral.service#UnknownOperationException",
                    "message": f"stub does not implement {op}"}).encode())

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/arrivals":
                since = int(parse_qs(url.query).get("since", ["0"])[0])
                payload = json.dumps(log.arrivals(since)).encode()
            elif url.path == "/reads":
                payload = json.dumps(log.read_times()).encode()
            else:
                payload = json.dumps(log.counts()).encode()
            self.reply(200, payload)

    return Handler


class FleetStub:
    """fleetstub.py as a child process; `endpoint` is its URL."""

    def __init__(self, count_only: tuple[str, ...] = ()) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve())]
        for t in count_only:
            cmd += ["--count-only", t]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"fleetstub did not start (got {line!r})")
        self.endpoint = f"http://127.0.0.1:{int(line)}"
        self._next = 0
        self.seen: dict[tuple[str, int], float] = {}  # (table, id) -> first arrival

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=30) as r:
            return json.loads(r.read())

    def counts(self) -> dict[str, Any]:
        """Requests, items, DescribeTable calls, and per table [items, first, last]."""
        return dict(self._get("/counts"))

    def reads(self) -> dict[str, dict[str, list[float]]]:
        """When each BatchGetItem and Scan arrived: {operation: {table: [time, ...]}}."""
        return dict(self._get("/reads"))

    def poll(self) -> dict[tuple[str, int], float]:
        """Fetch the items logged since the last poll into `seen`; `seen`."""
        got = self._get(f"/arrivals?since={self._next}")
        self._next = got["next"]
        for t, table, key in got["items"]:
            self.seen.setdefault((table, key), t)
        return self.seen

    def cpu_seconds(self) -> float:
        """The stand-in's own CPU time so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def close(self) -> None:
        """Stop the child process."""
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    """Parse the command line and serve."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count-only", action="append", default=[], metavar="TABLE",
                    help="only count this table's items (repeatable)")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(Log(set(args.count_only))))
    server.daemon_threads = True
    server.request_queue_size = 128
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
