"""A DynamoDB stand-in on 127.0.0.1 that answers each request as a test tells
it to: a status, a body and, unless told otherwise, a correct x-amz-crc32."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from faultproxy import QuietHandler

Reply = tuple[int, dict[str, Any]]


class ReplyStub:
    """Serves `answer(operation, body) -> (status, document)`; keeps every request body."""

    def __init__(self, answer: Callable[[str, dict[str, Any]], Reply]) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.ports: list[int] = []  # the client's port: one connection, one port
        self.bad_crc = False
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.bodies.append(raw)
                stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                stub.ports.append(self.client_address[1])
                op = self.headers.get("X-Amz-Target", "").split(".")[-1]
                status, doc = stub.answer(op, json.loads(raw) if raw else {})
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amz-crc32", str(zlib.crc32(payload) ^ (1 if stub.bad_crc else 0)))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def error(code: str, status: int = 400) -> Reply:
    """An error reply as DynamoDB writes one."""
    return status, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": f"injected {code}"}
