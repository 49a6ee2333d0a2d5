"""A zero-work DynamoDB stand-in in its own process, so that the client's CPU
time can be measured apart from the server's. It answers DescribeTable (an
ACTIVE table keyed by a single N attribute "id") and BatchWriteItem (every
item processed; items are counted, not parsed, and GET /counts returns the
counts), after an optional fixed delay, with the x-amz-crc32 header real
DynamoDB sends. It prints its port on stdout, then serves until killed.

Usage: python stubproc.py [--delay SECONDS]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CREATED = time.time()


def describe(name: str) -> dict[str, Any]:
    return {"Table": {
        "TableName": name, "TableStatus": "ACTIVE", "TableId": "00000000-0000-4000-8000-00000000cafe",
        "CreationDateTime": CREATED, "ItemCount": 0, "TableSizeBytes": 0,
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "N"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"}}}


class Counts:
    """Requests and items seen, shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.items = 0

    def add(self, raw: bytes) -> None:
        # Counted without parsing: the stub shares the cores with the client it measures.
        n = raw.count(b'"PutRequest"') + raw.count(b'"DeleteRequest"')
        with self.lock:
            self.requests += 1
            self.items += n


def handler(delay: float, counts: Counts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes; without this, Nagle and
        # delayed ACKs add ~40 ms to every reply.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            op = self.headers.get("X-Amz-Target", "").split(".")[-1]
            if delay:
                time.sleep(delay)
            if op == "BatchWriteItem":
                counts.add(raw)
                self.reply(200, b'{"UnprocessedItems":{}}')
            elif op == "DescribeTable":
                self.reply(200, json.dumps(describe(json.loads(raw)["TableName"])).encode())
            else:
                print(f"stubproc: unsupported operation {op!r}", file=sys.stderr)
                self.reply(400, json.dumps({
                    "__type": "com.amazon.coral.service#UnknownOperationException",
                    "message": f"stub does not implement {op}"}).encode())

        def do_GET(self) -> None:
            # Not DynamoDB: lets the parent check what arrived.
            with counts.lock:
                seen = {"requests": counts.requests, "items": counts.items}
            self.reply(200, json.dumps(seen).encode())

        def reply(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amz-crc32", str(zlib.crc32(payload)))
            self.send_header("x-amzn-RequestId", "stub")
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def serve(delay: float) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(delay, Counts()))
    server.daemon_threads = True
    server.request_queue_size = 128
    print(server.server_address[1], flush=True)
    server.serve_forever()


class StubProcess:
    """Start stubproc.py as a child process; `endpoint` is its URL."""

    def __init__(self, delay: float = 0.0) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--delay", str(delay)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"stubproc did not start (got {line!r})")
        self.port = int(line)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/counts", timeout=10) as r:
            return dict(json.loads(r.read()))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each reply")
    serve(ap.parse_args().delay)


if __name__ == "__main__":
    main()
