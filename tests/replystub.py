"""A DynamoDB stand-in on 127.0.0.1 that answers each request as a test tells
it to: a status and a JSON document (with, unless told otherwise, a correct
x-amz-crc32), or raw bytes sent as they are (leftovers, drips, damaged
replies). It checks each request's SigV4 signature over the Host header it
received, and refuses a bad one as DynamoDB does. It can serve TLS, and listen
on a port of the test's choosing (80 or 443, for an endpoint that names the
default port). ForwardProxy is an HTTP proxy on 127.0.0.1 in front of it."""

from __future__ import annotations

import hashlib
import hmac
import json
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from faultproxy import QuietHandler

Reply = tuple[int, dict[str, Any]]
SECRET = "testing"  # the tests' AWS secret key (conftest)


@dataclass
class Raw:
    """Bytes sent as they are, in pieces `pause` seconds apart; the connection
    closes after them if `close`."""

    pieces: list[bytes]
    pause: float = 0.0
    close: bool = False


def http_reply(status: int, body: bytes, crc: bool = True) -> bytes:
    """A whole HTTP/1.1 response with this body, framed as DynamoDB frames one."""
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {len(body)}\r\n"
    if crc:
        head += f"x-amz-crc32: {zlib.crc32(body)}\r\n"
    return head.encode() + b"\r\n" + body


def sigv4_valid(method: str, path: str, headers: dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    """An independent SigV4 check (AWS's documented algorithm) of a request
    without a query string, over the headers as received (names in lower case)."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(part.strip().split("=", 1) for part in auth.split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    if any(h not in headers for h in signed):
        return False
    canonical = "\n".join([method, path, "", *[f"{h}:{' '.join(headers[h].split())}" for h in signed], "",
                           fields["SignedHeaders"], hashlib.sha256(body).hexdigest()])
    date = headers["x-amz-date"]
    scope = fields["Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == fields["Signature"]


class ReplyStub:
    """Serves `answer(operation, body) -> (status, document) or Raw`; keeps every
    request (body, headers, the client's port, whether its signature held)."""

    def __init__(self, answer: Callable[[str, dict[str, Any]], Reply | Raw],
                 tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.ports: list[int] = []  # the client's port: one connection, one port
        self.signed: list[bool] = []  # whether each request's signature verified over the Host received
        self.cut: list[str] = []  # raw replies the client cut short (it closed or reset the connection)
        self.bad_crc = False
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                stub._serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _serve(self, h: QuietHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in h.headers.items()}
        self.bodies.append(raw)
        self.headers.append(headers)
        self.ports.append(h.client_address[1])
        path = urlsplit(h.path).path or "/"  # a request through a proxy names the whole URL
        ok = sigv4_valid(h.command, path, headers, raw)
        self.signed.append(ok)
        op = h.headers.get("X-Amz-Target", "").split(".")[-1]
        reply = self.answer(op, json.loads(raw) if raw else {}) if ok else error("InvalidSignatureException")
        if isinstance(reply, Raw):
            self._send_raw(h, reply)
            return
        status, doc = reply
        payload = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/x-amz-json-1.0")
        h.send_header("x-amz-crc32", str(zlib.crc32(payload) ^ (1 if self.bad_crc else 0)))
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _send_raw(self, h: QuietHandler, reply: Raw) -> None:
        try:
            for i, piece in enumerate(reply.pieces):
                if i and reply.pause:
                    time.sleep(reply.pause)
                h.wfile.write(piece)
                h.wfile.flush()
        except OSError as e:
            self.cut.append(type(e).__name__)
            h.close_connection = True
            return
        h.close_connection = reply.close

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def error(code: str, status: int = 400) -> Reply:
    """An error reply as DynamoDB writes one."""
    return status, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": f"injected {code}"}


class ForwardProxy:
    """An HTTP proxy on 127.0.0.1 that relays CONNECT tunnels and absolute-form
    requests to 127.0.0.1 only; `seen` keeps each connection's first request line."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            method, target = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
            self.seen.append(f"{method} {target}")
            where = target if method == "CONNECT" else urlsplit(target).netloc
            host, _, port = where.rpartition(":")
            if host != "127.0.0.1":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection((host, int(port))) as upstream:
                if method == "CONNECT":
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    upstream.sendall(head)
                _pipe(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    while True:
        readable, _, _ = select.select([a, b], [], [], 30)
        if not readable:
            return
        for s in readable:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)
