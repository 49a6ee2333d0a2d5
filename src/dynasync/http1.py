"""One HTTP/1.1 request and its response over a keep-alive connection, and
nothing more: what BatchWriteItem needs, at a fraction of http.client's cost
per request (http.client parses every response's headers with the email
package, which costs about as much as signing the request).

The request goes out in one write. The response is read by its
Content-Length, or chunked, or, lacking both, to the end of the connection.
Interim 1xx responses are skipped. Anything malformed (a body over
MAX_BODY included) raises ProtocolError, an OSError, which callers treat as
the connection failing: retryable. A server that closed the connection before
answering raises Closed, one of them: on a kept-alive connection it most often
timed the connection out while it sat idle.

Every exchange has a Deadline: each socket operation may take at most what is
left of it (and at most its own timeout), so a reply trickled a byte at a time
still ends on time, with DeadlineExceeded. A failed exchange resets the
connection (SO_LINGER 0): what the kernel still holds of the request is
discarded, never sent after dynasync gave up on it. Bytes the server sends
beyond its reply, or its close, make the connection unfit for another request
(`reusable`, checked as urllib3 checks a pooled connection before reusing it):
they are never read as the next request's reply.
"""

from __future__ import annotations

import contextlib
import io
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any

from dynasync.exceptions import Closed, DeadlineExceeded, ProtocolError

MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 256 * 1024 * 1024  # far above any BatchWriteItem reply (a request is at most 16 MB)
PIECE = 1024 * 1024  # a body is read this much at a time, not allocated whole from a length the server gave
RECV = 65536  # the most one receive of a status line and headers takes
HEX_DIGITS = b"0123456789abcdefABCDEF"
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets and drops unsent bytes


@dataclass
class Deadline:
    """When a request must be over (time.monotonic()), and whether it ran out."""

    at: float
    expired: bool = False

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(time.monotonic() + seconds)

    def left(self, cap: float) -> float:
        """How long the next socket operation may take: what is left, at most
        `cap`; DeadlineExceeded once nothing is."""
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
            raise DeadlineExceeded("no complete reply before the request's deadline")
        return left if left < cap else cap

    def blame(self, e: TimeoutError) -> TimeoutError:
        """A socket timeout as the deadline's, when the deadline is what ran out."""
        if isinstance(e, DeadlineExceeded) or time.monotonic() < self.at:
            return e
        self.expired = True
        return DeadlineExceeded("no complete reply before the request's deadline")


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """Give the socket's next operation this timeout. CPython's settimeout makes
    an ioctl(2), releasing the GIL, even when the value is unchanged: skipped then,
    as it is twice a request while the deadline is further off than the read timeout."""
    if sock.gettimeout() != seconds:
        sock.settimeout(seconds)


def reset(sock: socket.socket) -> None:
    """Make the socket's close a reset: what it has not sent yet is dropped."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)


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
        deadline: Deadline,
        context: ssl.SSLContext | None = None,
    ) -> None:
        """Connect (and shake hands) within connect_timeout and the first request's deadline."""
        try:
            sock = socket.create_connection((host, port), timeout=deadline.left(connect_timeout))
        except TimeoutError as e:
            raise deadline.blame(e) from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock.settimeout(deadline.left(connect_timeout))
                sock = context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as e:
            sock.close()
            raise deadline.blame(e) from e
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.read_timeout = read_timeout
        self.exchanges = 0  # completed over this connection
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN | select.POLLPRI)
        self._buf = bytearray()  # received, not yet read: part of a reply, or bytes after one
        self._pos = 0
        self._deadline = deadline
        self._received = 0  # bytes of the current reply so far

    def reusable(self) -> bool:
        """Whether another request may go over this connection: nothing unread
        waits in it (bytes the server sent beyond its last reply) and the
        server has not closed it. One poll(2) with no wait."""
        if self._pos < len(self._buf) or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return False
        return not self._poll.poll(0)

    def exchange(self, request: bytes, deadline: Deadline) -> Reply:
        """Send a request and read its response, both before the deadline. A
        failure leaves the connection reset."""
        self._deadline = deadline
        try:
            return self._exchange(request)
        except TimeoutError as e:
            self.abort()
            blamed = deadline.blame(e)
            if blamed is e:
                raise
            raise blamed from e
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def abort(self) -> None:
        """Close the connection with a reset, dropping whatever of the request is unsent."""
        reset(self.sock)
        self.sock.close()

    def _exchange(self, request: bytes) -> Reply:
        if self._pos < len(self._buf):
            raise ProtocolError("bytes left over from the previous reply")
        self._received = 0
        try:
            set_timeout(self.sock, self._deadline.left(self.read_timeout))
            self.sock.sendall(request)
        except (ConnectionError, ssl.SSLEOFError) as e:
            raise Closed(f"the server closed the connection ({type(e).__name__})") from e
        while True:
            version, status = self._status_line(self._line())
            headers = self._headers()
            if not 100 <= status < 200:
                break
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        body, to_the_end = self._body(status, headers)
        self.exchanges += 1
        # Bytes already here beyond the reply: a stray, never the next reply.
        leftover = self._pos < len(self._buf)
        return Reply(status, headers, body, keep_alive and not to_the_end and not leftover)

    def _recv(self, size: int) -> bytes:
        """At most `size` bytes as they come; b"" at the end of the connection."""
        set_timeout(self.sock, self._deadline.left(self.read_timeout))
        try:
            data = self.sock.recv(size)
        except (ConnectionError, ssl.SSLEOFError) as e:
            if not self._received:
                raise Closed(f"the server closed the connection ({type(e).__name__})") from e
            raise
        self._received += len(data)
        return data

    def _fill(self) -> None:
        """Receive more of the reply into the buffer."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        data = self._recv(RECV)
        if not data:
            raise (ProtocolError if self._received else Closed)("the server closed the connection")
        self._buf += data

    def _line(self) -> bytes:
        buf = self._buf
        scanned = 0
        while (end := buf.find(b"\n", self._pos + scanned)) < 0:
            scanned = len(buf) - self._pos
            if scanned > MAX_LINE:
                raise ProtocolError("a line of the response is too long")
            self._fill()
        line = bytes(buf[self._pos : end + 1])
        self._pos = end + 1
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
            return self._to_the_end(), True
        if not (length.isascii() and length.isdigit()):
            raise ProtocolError(f"bad Content-Length {length[:20]!r}")
        size = int(length)
        if size > MAX_BODY:
            raise ProtocolError(f"the response body is over {MAX_BODY} bytes")
        body = self._read(size)
        if len(body) != size:
            raise ProtocolError("the response body was cut short")
        return body, False

    def _read(self, size: int) -> bytes:
        """The next `size` bytes (fewer at the end of the connection); never
        more, so bytes after them stay unread where `reusable` finds them."""
        start = self._pos
        if len(self._buf) - start >= size:
            self._pos = start + size
            return bytes(self._buf[start : self._pos])
        parts = [bytes(self._buf[start:])]
        size -= len(parts[0])
        self._buf.clear()
        self._pos = 0
        while size > 0 and (piece := self._recv(min(size, PIECE))):
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    def _to_the_end(self) -> bytes:
        parts = [bytes(self._buf[self._pos :])]
        self._buf.clear()
        self._pos = 0
        so_far = len(parts[0])
        while so_far <= MAX_BODY and (piece := self._recv(PIECE)):
            parts.append(piece)
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
            chunk = self._read(size + 2)
            if len(chunk) != size + 2 or not chunk.endswith(b"\r\n"):
                raise ProtocolError("a chunk of the response was cut short")
            parts.append(chunk[:-2])
            so_far += size


class _DeadlineRaw(io.RawIOBase):
    """A socket's raw reader whose every receive ends by the deadline."""

    def __init__(self, raw: Any, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline
        timeout = sock.gettimeout()
        self._timeout = float("inf") if timeout is None else timeout

    def readable(self) -> bool:
        """Always: it reads a socket."""
        return True

    def readinto(self, buffer: Any) -> int | None:
        """One receive, within what is left of the deadline; a timeout resets the socket."""
        try:
            set_timeout(self._sock, self._deadline.left(self._timeout))
            n: int | None = self._raw.readinto(buffer)
            return n
        except TimeoutError as e:
            reset(self._sock)
            blamed = self._deadline.blame(e)
            if blamed is e:
                raise
            raise blamed from e

    def close(self) -> None:
        """Close the socket's reader too."""
        self._raw.close()
        super().close()


def deadline_reader(reader: io.BufferedReader, sock: socket.socket, deadline: Deadline) -> io.BufferedReader:
    """`reader` (a socket's makefile("rb")) made to end by the deadline: another
    client's response reader, made to keep the same promise as Connection."""
    return io.BufferedReader(_DeadlineRaw(reader.detach(), sock, deadline))
