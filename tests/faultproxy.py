"""A fault-injecting HTTP proxy between the DynamoDB client and DynamoDB Local.

Each fault has a rate in [0, 1]: throttling errors, HTTP 500s, connections
dropped after the upstream applied the write, partial BatchWriteItem results
(UnprocessedItems), and added latency. `down` refuses everything, as an
unreachable endpoint would; `hang` holds the operations it names without ever
answering; `item_error` answers a BatchWriteItem whose body contains its
marker with the error code it names. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THROTTLE_CODES = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")
WRITES = ("BatchWriteItem", "PutItem", "DeleteItem")


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 handler that logs nothing: the base of the test servers."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without this, Nagle and
    # delayed ACKs add ~40 ms to every reply.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass


class FaultProxy:
    def __init__(self, upstream_port: int, seed: int = 0, **rates: float) -> None:
        self.upstream_port = upstream_port
        self.rates = {"throttle": 0.0, "error500": 0.0, "drop_after_write": 0.0, "partial": 0.0}
        self.rates.update(rates)
        self.latency = 0.0
        self.down = False
        self.hang: set[str] = set()
        self.item_error: tuple[bytes, str] | None = None  # (marker in the body, error code)
        self._released = threading.Event()
        self.counts: Counter[str] = Counter()
        # Called with (operation, request body, time the reply went out) after
        # every successful upstream call: benchmarks use it to time arrivals.
        self.on_reply: Any = None
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                proxy._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def _roll(self, fault: str) -> bool:
        with self._lock:
            hit = self._random.random() < self.rates[fault]
            if hit:
                self.counts[fault] += 1
            return hit

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        op = h.headers.get("X-Amz-Target", "").split(".")[-1]
        with self._lock:
            self.counts[f"op:{op}"] += 1
        if self.down:
            h.close_connection = True
            return
        if op in self.hang:
            with self._lock:
                self.counts["hung"] += 1
            self._released.wait()
            h.close_connection = True
            return
        if op == "BatchWriteItem" and self.item_error and self.item_error[0] in body:
            with self._lock:
                self.counts["item_error"] += 1
            return self._reply(h, 400, {"__type": f"com.amazonaws.dynamodb.v20120810#{self.item_error[1]}",
                                        "message": "injected"})
        if self.latency:
            time.sleep(self.latency)
        if self._roll("throttle"):
            code = self._random.choice(THROTTLE_CODES)
            return self._reply(h, 400, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"})
        if self._roll("error500"):
            return self._reply(h, 500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                                        "message": "injected"})
        held_back: dict[str, list[Any]] = {}
        if op == "BatchWriteItem" and self._roll("partial"):
            request = json.loads(body)
            for table, items in request["RequestItems"].items():
                keep = max(1, len(items) // 2) if len(items) > 1 else 1
                if len(items) > 1:
                    held_back[table] = items[keep:]
                    request["RequestItems"][table] = items[:keep]
            body = json.dumps(request).encode()
        status, headers, payload = self._forward(h, body)
        if op in WRITES and status == 200 and self._roll("drop_after_write"):
            h.close_connection = True  # applied upstream, but the client never hears back
            return
        if held_back and status == 200:
            response = json.loads(payload)
            response.setdefault("UnprocessedItems", {}).update(held_back)
            self._reply(h, 200, response)
        else:
            self._send(h, status, headers, payload)
        if self.on_reply is not None and status == 200:
            self.on_reply(op, body, time.time())

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "content-length")}
            headers["Content-Length"] = str(len(body))
            conn.request("POST", h.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _reply(self, h: BaseHTTPRequestHandler, status: int, doc: dict[str, Any]) -> None:
        self._send(h, status, [("Content-Type", "application/x-amz-json-1.0")], json.dumps(doc).encode())

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        h.send_response(status)
        for k, v in headers:
            # The body may have changed: drop its checksum and framing headers.
            if k.lower() not in ("content-length", "x-amz-crc32", "connection", "transfer-encoding", "date",
                                 "server"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
