"""A zero-work DynamoDB stand-in in its own process, so that the client's CPU
time can be measured apart from the server's. It answers DescribeTable (an
ACTIVE table keyed by a single N attribute "id") and BatchWriteItem (every
item processed), after an optional fixed delay, with the x-amz-crc32 header
real DynamoDB sends. It prints its port on stdout, then serves until killed.

Every BatchWriteItem is logged: its arrival time (time.monotonic, which is
system-wide, so the parent can compare), its items, its write capacity units
and the HTTP status it got. Items are counted without parsing, because the
stub shares the cores with the client it measures; with --units the body is
parsed and units are counted by DynamoDB's rule (one per started KB of item,
computed here from the attribute names and values; a delete is one). With
--throttle AFTER FOR, every BatchWriteItem from AFTER seconds after the first
one, for FOR seconds, is answered with ProvisionedThroughputExceededException.
With --keep, every
BatchWriteItem body is parsed and each Put's item kept by its key, a Delete
forgets it, and BatchGetItem answers from them (for the S3 objects of
oversized items, which dynasync reads back before deleting any: the items
kept are then small). GET /counts and GET /log return what arrived (not
DynamoDB's API).

Usage: python stubproc.py [--delay SECONDS] [--units] [--throttle AFTER FOR] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CREATED = time.time()
THROTTLE = json.dumps({
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded. "
               "Consider increasing your provisioning level with the UpdateTable API."}).encode()


def describe(name: str) -> dict[str, Any]:
    """DescribeTable's answer: an ACTIVE on-demand table keyed by "id" (N), or by
    "PK" (S) when its name ends in "-pk" (for a key template)."""
    key, kind = ("PK", "S") if name.endswith("-pk") else ("id", "N")
    return {"Table": {
        "TableName": name, "TableStatus": "ACTIVE", "TableId": "00000000-0000-4000-8000-00000000cafe",
        "CreationDateTime": CREATED, "ItemCount": 0, "TableSizeBytes": 0,
        "AttributeDefinitions": [{"AttributeName": key, "AttributeType": kind}],
        "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"}}}


# --- DynamoDB's item size, independent of dynasync's own accounting ---

def number_size(text: str) -> int:
    """Bytes of a number: one per two significant digits, plus one."""
    digits = text.lstrip("+-").lower().split("e")[0].replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def value_size(av: dict[str, Any]) -> int:
    """Bytes of one attribute value, by DynamoDB's documented rules."""
    ((kind, v),) = av.items()
    sizes: dict[str, Any] = {
        "S": lambda: len(v.encode()),
        "N": lambda: number_size(v),
        "B": lambda: len(base64.b64decode(v)),
        "BOOL": lambda: 1,
        "NULL": lambda: 1,
        "SS": lambda: sum(len(s.encode()) for s in v),
        "NS": lambda: sum(number_size(n) for n in v),
        "BS": lambda: sum(len(base64.b64decode(b)) for b in v),
        "L": lambda: 3 + sum(1 + value_size(x) for x in v),
        "M": lambda: 3 + sum(len(k.encode()) + 1 + value_size(x) for k, x in v.items()),
    }
    return int(sizes[kind]())


def key_of(item: dict[str, Any]) -> str:
    """An item's key ("id" (N), or "PK" (S) for a "-pk" table), as text."""
    return json.dumps(item.get("id") or item.get("PK"), sort_keys=True)


def item_units(item: dict[str, Any]) -> int:
    """Write capacity units of a Put: one per started KB of the item."""
    size = sum(len(name.encode()) + value_size(v) for name, v in item.items())
    return max(1, math.ceil(size / 1024))


def body_units(raw: bytes) -> int:
    """Write capacity units of a BatchWriteItem body; a delete is one."""
    total = 0
    for requests in json.loads(raw)["RequestItems"].values():
        for r in requests:
            total += item_units(r["PutRequest"]["Item"]) if "PutRequest" in r else 1
    return total


# --- the server ---

@dataclass
class Log:
    """What arrived, shared by the handler threads: one [time, items, units, status] per BatchWriteItem."""

    units: bool
    throttle: tuple[float, float] | None = None  # (seconds after the first write, duration)
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: list[list[float]] = field(default_factory=list)
    episode: list[float] | None = None  # [start, end] in time.monotonic, once the first write came
    items: dict[str, dict[str, Any]] | None = None  # with --keep: table -> key (JSON) -> item

    def arrived(self) -> tuple[float, int]:
        """A write arriving: its time, and its status (400 within the throttling episode). Both
        under the lock, so the first write to ask starts the episode and none is stamped before."""
        with self.lock:
            now = time.monotonic()
            if self.episode is None and self.throttle is not None:
                start = now + self.throttle[0]
                self.episode = [start, start + self.throttle[1]]
            throttled = self.episode is not None and self.episode[0] <= now < self.episode[1]
        return now, 400 if throttled else 200

    def add(self, now: float, raw: bytes, status: int) -> None:
        """Record one BatchWriteItem."""
        items = raw.count(b'"PutRequest"') + raw.count(b'"DeleteRequest"')
        units = body_units(raw) if self.units else items
        with self.lock:
            self.writes.append([now, items, units, status])
        if self.items is not None and status == 200:
            self.keep(raw)

    def keep(self, raw: bytes) -> None:
        """Keep each Put's item by its key ("id", or "PK"), and forget each Delete's."""
        for table, requests in json.loads(raw)["RequestItems"].items():
            kept = self.items.setdefault(table, {}) if self.items is not None else {}
            for r in requests:
                if "PutRequest" in r:
                    item = r["PutRequest"]["Item"]
                    kept[key_of(item)] = item
                else:
                    kept.pop(key_of(r["DeleteRequest"]["Key"]), None)

    def batch_get(self, raw: bytes) -> dict[str, Any]:
        """BatchGetItem's answer from the items kept: every key answered."""
        out: dict[str, list[Any]] = {}
        for table, ask in json.loads(raw)["RequestItems"].items():
            kept = (self.items or {}).get(table, {})
            out[table] = [kept[k] for k in map(key_of, ask["Keys"]) if k in kept]
        return {"Responses": out, "UnprocessedKeys": {}}

    def counts(self) -> dict[str, int]:
        """Requests, and the items and units of those that succeeded."""
        with self.lock:
            ok = [w for w in self.writes if w[3] == 200]
            return {"requests": len(self.writes), "items": int(sum(w[1] for w in ok)),
                    "units": int(sum(w[2] for w in ok))}


class JsonHandler(BaseHTTPRequestHandler):
    """What both stand-ins' handlers share: keep-alive HTTP/1.1, no request log, and
    replies carrying the headers DynamoDB sends (x-amz-crc32 included)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without this, Nagle and
    # delayed ACKs add ~40 ms to every reply.
    disable_nagle_algorithm = True
    request_id = "stub"

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, payload: bytes) -> None:
        """Send one JSON response."""
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amz-crc32", str(zlib.crc32(payload)))
        self.send_header("x-amzn-RequestId", self.request_id)
        self.end_headers()
        self.wfile.write(payload)


def handler(delay: float, log: Log) -> type[BaseHTTPRequestHandler]:
    """The request handler class, answering after `delay` seconds and recording into `log`."""
    class Handler(JsonHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            op = self.headers.get("X-Amz-Target", "").split(".")[-1]
            if op == "BatchWriteItem":
                now, status = log.arrived()
                if delay:
                    time.sleep(delay)
                log.add(now, raw, status)
                self.reply(status, b'{"UnprocessedItems":{}}' if status == 200 else THROTTLE)
                return
            if delay:
                time.sleep(delay)
            if op == "DescribeTable":
                self.reply(200, json.dumps(describe(json.loads(raw)["TableName"])).encode())
            elif op == "BatchGetItem" and log.items is not None:
                self.reply(200, json.dumps(log.batch_get(raw)).encode())
            else:
                print(f"stubproc: unsupported operation {op!r}", file=sys.stderr)
                self.reply(400, json.dumps({
                    "__type": "com.amazon.coral.service#UnknownOperationException",
                    "message": f"stub does not implement {op}"}).encode())

        def do_GET(self) -> None:
            # Not DynamoDB: lets the parent check what arrived.
            if self.path == "/log":
                with log.lock:
                    payload = json.dumps({"writes": log.writes, "episode": log.episode}).encode()
            else:
                payload = json.dumps(log.counts()).encode()
            self.reply(200, payload)

    return Handler


def serve(delay: float, log: Log) -> None:
    """Serve on a free 127.0.0.1 port, printed first, until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(delay, log))
    server.daemon_threads = True
    server.request_queue_size = 128
    print(server.server_address[1], flush=True)
    server.serve_forever()


class StubProcess:
    """Start stubproc.py as a child process; `endpoint` is its URL."""

    def __init__(self, delay: float = 0.0, units: bool = False,
                 throttle: tuple[float, float] | None = None, keep: bool = False) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--delay", str(delay)]
        cmd += ["--units"] if units else []
        cmd += ["--keep"] if keep else []
        cmd += ["--throttle", str(throttle[0]), str(throttle[1])] if throttle else []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"stubproc did not start (got {line!r})")
        self.port = int(line)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=10) as r:
            return json.loads(r.read())

    def counts(self) -> dict[str, int]:
        """Requests received, and the items and units of the successful ones."""
        return dict(self._get("/counts"))

    def log(self) -> dict[str, Any]:
        """{"writes": [[monotonic time, items, units, status], ...], "episode": [start, end] or None}."""
        return dict(self._get("/log"))

    def close(self) -> None:
        """Stop the child process."""
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    """Parse the command line and serve."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each reply")
    ap.add_argument("--units", action="store_true", help="parse bodies to count write capacity units")
    ap.add_argument("--throttle", type=float, nargs=2, metavar=("AFTER", "FOR"),
                    help="throttle every BatchWriteItem from AFTER s after the first one, for FOR s")
    ap.add_argument("--keep", action="store_true", help="keep each item written; answer BatchGetItem from them")
    args = ap.parse_args()
    serve(args.delay, Log(args.units, tuple(args.throttle) if args.throttle else None,
                          items={} if args.keep else None))


if __name__ == "__main__":
    main()
