"""One HTTP/1.1 request and its response over a keep-alive connection, and
nothing more: what BatchWriteItem needs, at a fraction of http.client's cost
per request (http.client parses every response's headers with the email
package, which costs about as much as signing the request).

The request goes out in one write. The response is read by its
Content-Length, or chunked, or, lacking both, to the end of the connection.
Interim 1xx responses are skipped. Anything malformed (a body over
MAX_BODY included) raises ProtocolError, an OSError, which callers treat as
the connection failing: retryable, and the connection is dropped. A server
that closed the connection before answering raises Closed, one of them: on a
kept-alive connection it most often timed the connection out while it sat idle.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from dynasync.exceptions import Closed, ProtocolError

MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 256 * 1024 * 1024  # far above any BatchWriteItem reply (a request is at most 16 MB)
PIECE = 1024 * 1024  # a body is read this much at a time, not allocated whole from a length the server gave
HEX_DIGITS = b"0123456789abcdefABCDEF"


@dataclass
class Reply:
    """A response: its status, headers (names in lower case), body, and
    whether the connection may carry another request."""

    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The whole request as it goes on the wire."""
    head = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """A TCP (or TLS) connection that exchanges one request at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        connect_timeout: float,
        read_timeout: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.exchanges = 0  # completed over this connection

    def exchange(self, request: bytes) -> Reply:
        """Send a request and read its response."""
        try:
            self.sock.sendall(request)
            line = self.reader.readline(MAX_LINE + 1)
        except (ConnectionError, ssl.SSLEOFError) as e:
            raise Closed(f"the server closed the connection ({type(e).__name__})") from e
        if not line:
            raise Closed("the server closed the connection")
        while True:
            version, status = self._status_line(line)
            headers = self._headers()
            if not 100 <= status < 200:
                break
            line = self._line()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        body, to_the_end = self._body(status, headers)
        self.exchanges += 1
        return Reply(status, headers, body, keep_alive and not to_the_end)

    def close(self) -> None:
        """Close the connection."""
        self.reader.close()
        self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline(MAX_LINE + 1)
        if not line:
            raise ProtocolError("the server closed the connection")
        if len(line) > MAX_LINE:
            raise ProtocolError("a line of the response is too long")
        return line

    def _status_line(self, line: bytes) -> tuple[str, int]:
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {b' '.join(parts)[:80]!r}")
        return parts[0].decode("latin-1"), int(parts[1])

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            name, colon, value = line.partition(b":")
            if not colon:
                raise ProtocolError(f"not a header line: {line[:80]!r}")
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        raise ProtocolError(f"more than {MAX_HEADERS} headers")

    def _body(self, status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
        """The body, and whether it ran to the end of the connection."""
        if status in (204, 304):
            return b"", False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunked(), False
        length = headers.get("content-length")
        if length is None:
            return self._read(MAX_BODY + 1, 0), True
        if not (length.isascii() and length.isdigit()):
            raise ProtocolError(f"bad Content-Length {length[:20]!r}")
        size = int(length)
        if size > MAX_BODY:
            raise ProtocolError(f"the response body is over {MAX_BODY} bytes")
        body = self._read(size, 0)
        if len(body) != size:
            raise ProtocolError("the response body was cut short")
        return body, False

    def _read(self, size: int, so_far: int) -> bytes:
        """Up to `size` bytes of the body (fewer at the end of the connection),
        `so_far` of it read already; more than MAX_BODY in all is a ProtocolError."""
        if size <= PIECE and so_far + size <= MAX_BODY:
            return self.reader.read(size)
        parts: list[bytes] = []
        while size > 0:
            piece = self.reader.read(min(size, PIECE))
            if not piece:
                break
            parts.append(piece)
            size -= len(piece)
            so_far += len(piece)
            if so_far > MAX_BODY:
                raise ProtocolError(f"the response body is over {MAX_BODY} bytes")
        return b"".join(parts)

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        so_far = 0
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            if not size_text or size_text.strip(HEX_DIGITS):  # int() would also take "-1", "0x1", "1_0"
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if so_far + size > MAX_BODY:
                raise ProtocolError(f"the response body is over {MAX_BODY} bytes")
            if size == 0:
                while self._line() not in (b"\r\n", b"\n"):  # trailers
                    pass
                return b"".join(parts)
            chunk = self._read(size + 2, so_far)
            if len(chunk) != size + 2 or not chunk.endswith(b"\r\n"):
                raise ProtocolError("a chunk of the response was cut short")
            parts.append(chunk[:-2])
            so_far += size
