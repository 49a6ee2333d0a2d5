"""A DynamoDB stand-in that does no work: DescribeTable and BatchWriteItem
answered after a fixed delay. It shows how well the client hides latency
when the server is not the bottleneck (DynamoDB Local is CPU-bound here)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StubDynamo:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.items = 0
        self.requests = 0
        self._lock = threading.Lock()
        stub = self

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
                time.sleep(stub.delay)
                if op == "DescribeTable":
                    body = json.loads(raw)
                    reply: dict[str, Any] = {"Table": {
                        "TableName": body["TableName"], "TableStatus": "ACTIVE",
                        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "N"}],
                        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}]}}
                else:
                    # Counted without parsing: the stub shares the cores with the client it measures.
                    with stub._lock:
                        stub.requests += 1
                        stub.items += raw.count(b'"PutRequest"') + raw.count(b'"DeleteRequest"')
                    reply = {"UnprocessedItems": {}}
                payload = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
