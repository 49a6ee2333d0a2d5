"""The minimal HTTP/1.1 exchange the lean write path uses, against a server
that answers scripted raw bytes (so odd but legal replies can be sent)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials

from dynasync import http1
from dynasync.exceptions import Closed, DeadlineExceeded, ProtocolError, RetryableError
from dynasync.http1 import Connection, Deadline, request_bytes
from dynasync.wire import Endpoint, WireClient


class Scripted:
    """A one-connection server: reads a request, writes the next scripted reply."""

    def __init__(self, replies: list[bytes], hold: float = 0.0) -> None:
        self.hold = hold  # seconds the connection stays open after the last reply
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []
        self.replies = replies
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            for reply in self.replies:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest)
                closing = reply.endswith(b"<close>")
                for i, piece in enumerate(reply.removesuffix(b"<close>").split(b"<pause>")):
                    if i:
                        time.sleep(0.2)
                    conn.sendall(piece)
                if closing:
                    return
            time.sleep(self.hold)


@pytest.fixture
def post() -> Iterator[bytes]:
    yield request_bytes("POST", "/", {"Host": "x", "Content-Length": "2"}, b"{}")


def soon() -> Deadline:
    return Deadline.after(10.0)


def connect(server: Scripted) -> Connection:
    return Connection("127.0.0.1", server.port, 5.0, 5.0, soon())


def test_content_length_bodies_over_one_kept_alive_connection(post: bytes) -> None:
    server = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Amz-Crc32: 1\r\n\r\n{}",
                       b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nhello"])
    conn = connect(server)
    first, second = conn.exchange(post, soon()), conn.exchange(post, soon())
    assert (first.status, first.body, first.headers["x-amz-crc32"], first.keep_alive) == (200, b"{}", "1", True)
    assert (second.status, second.body) == (400, b"hello")
    assert server.requests[0] == post  # the request went out whole
    conn.close()


def test_chunked_bodies_interim_replies_and_repeated_headers(post: bytes) -> None:
    server = Scripted([b"HTTP/1.1 100 Continue\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nA: 1\r\na: 2\r\n\r\n"
                       b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n"])
    reply = connect(server).exchange(post, soon())
    assert (reply.status, reply.body, reply.headers["a"]) == (200, b"abcde", "1, 2")


@pytest.mark.parametrize(("reply", "keep"), [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
])
def test_whether_the_connection_may_be_kept(post: bytes, reply: bytes, keep: bool) -> None:
    assert connect(Scripted([reply])).exchange(post, soon()).keep_alive is keep


def test_a_body_that_runs_to_the_end_of_the_connection(post: bytes) -> None:
    reply = connect(Scripted([b"HTTP/1.1 200 OK\r\n\r\nall of it<close>"])).exchange(post, soon())
    assert reply.body == b"all of it" and reply.keep_alive is False


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH\r\n<close>",  # not HTTP
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort<close>",  # cut short
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n<close>",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n<close>",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n<close>",
    b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 101 + b"\r\n<close>",
    b"<close>",  # closed without a reply
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n<close>",  # a digit to str.isdigit, not to int()
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n<close>",  # over sys.maxsize
    b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n<close>",  # not allocated at once
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nab\r\n0\r\n\r\n<close>",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n<close>",
])
def test_a_malformed_reply_is_a_protocol_error(post: bytes, reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        connect(Scripted([reply])).exchange(post, soon())


def test_a_silent_server_times_out(post: bytes) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    conn = Connection("127.0.0.1", server.getsockname()[1], 5.0, 0.2, soon())
    with pytest.raises(TimeoutError):
        conn.exchange(post, soon())
    server.close()


def test_a_body_over_max_body_is_a_protocol_error(post: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_BODY", 10)
    monkeypatch.setattr(http1, "PIECE", 4)
    for reply in (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11 + b"<close>",
                  b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n"):
        with pytest.raises(ProtocolError, match="over 10 bytes"):
            connect(Scripted([reply])).exchange(post, soon())
    body = connect(Scripted([b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 10 + b"<close>"])).exchange(post, soon()).body
    assert body == b"x" * 10


def test_a_connection_the_server_closed_while_idle_raises_closed(post: bytes) -> None:
    conn = connect(Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]))  # then closes, unannounced
    assert conn.exchange(post, soon()).keep_alive and conn.exchanges == 1
    with pytest.raises(Closed):
        conn.exchange(post, soon())


def test_a_crc32_of_digits_int_does_not_read_is_a_mismatch() -> None:
    server = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-amz-crc32: \xb2\r\n\r\n{}"])
    endpoint = Endpoint(f"http://127.0.0.1:{server.port}", "test", None)
    client = WireClient(endpoint, "us-east-1", lambda: Credentials("a", "b"), 5.0, 5.0)
    with pytest.raises(RetryableError, match="CRC32Mismatch"):
        client.batch_write("t", [], soon())


# --- reuse, deadlines and resets -----------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(("reply", "why"), [
    (OK + b"HTTP/1.1 200 OK\r\n", "bytes in the reply's own segment"),
    (OK + b"<pause>HTTP/1.1 200 OK\r\n", "bytes arriving while the connection sits idle"),
])
def test_bytes_after_a_reply_leave_the_connection_unfit_for_another_request(
    post: bytes, reply: bytes, why: str
) -> None:
    conn = connect(Scripted([reply], hold=2.0))
    assert conn.exchange(post, soon()).body == b"{}"
    time.sleep(0.4)
    assert not conn.reusable(), why


def test_a_kept_alive_connection_is_reusable_until_the_server_closes_it(post: bytes) -> None:
    conn = connect(Scripted([OK], hold=0.5))
    assert conn.exchange(post, soon()).keep_alive
    assert conn.reusable()
    time.sleep(0.8)
    assert not conn.reusable()


def dripping_server(reply: bytes, pause: float) -> int:
    """A one-connection server that reads a request's head, then sends its reply a byte at a time."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            try:
                for b in reply:
                    conn.sendall(bytes([b]))
                    time.sleep(pause)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


@pytest.mark.parametrize("reply", [OK, b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n" + b" " * 50,
                                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 20])
def test_a_reply_dripped_within_the_read_timeout_ends_at_the_deadline(post: bytes, reply: bytes) -> None:
    port = dripping_server(reply, 0.05)
    deadline = Deadline.after(0.6)
    conn = Connection("127.0.0.1", port, 5.0, 0.5, deadline)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        conn.exchange(post, deadline)
    assert 0.5 < time.monotonic() - started < 1.0
    assert deadline.expired


def test_a_request_cut_at_its_deadline_is_reset_not_sent_later() -> None:
    """The server takes in the head and then nothing: at the deadline the rest of
    the body still queued in the kernel is discarded (a reset), not flushed after."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    body = b"x" * (64 * 1024 * 1024)
    request = request_bytes("POST", "/", {"Host": "x", "Content-Length": str(len(body))}, body)
    got: list[int] = []
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            time.sleep(1.5)  # the client gives up meanwhile
            total = 0
            try:
                while data := conn.recv(1 << 20):
                    total += len(data)
            except ConnectionResetError:
                pass
            got.append(total)
            done.set()

    threading.Thread(target=serve, daemon=True).start()
    deadline = Deadline.after(0.5)
    conn = Connection("127.0.0.1", server.getsockname()[1], 5.0, 5.0, deadline)
    with pytest.raises(DeadlineExceeded):
        conn.exchange(request, deadline)
    conn.abort()
    assert done.wait(10)
    assert got[0] < len(request)


class CountingSocket:
    """A socket that counts settimeout calls (each is an ioctl(2) in CPython, whatever the value)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.settimeouts = 0

    def settimeout(self, value: float | None) -> None:
        self.settimeouts += 1
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_an_exchange_with_the_whole_read_timeout_left_sets_no_timeout_again(post: bytes) -> None:
    """While the deadline is further off than the read timeout, every receive
    gets the read timeout the socket already has: it is not set again."""
    conn = connect(Scripted([OK, OK]))
    conn.exchange(post, soon())
    counting = CountingSocket(conn.sock)
    conn.sock = counting  # type: ignore[assignment]
    assert conn.exchange(post, soon()).status == 200
    assert counting.settimeouts == 0
    assert counting.gettimeout() == 5.0


def test_each_receive_waits_at_most_what_is_left_of_the_deadline(post: bytes) -> None:
    """A deadline nearer than the read timeout lowers the socket's timeout to what is left of it."""
    conn = connect(Scripted([OK, OK], hold=0.5))
    conn.exchange(post, soon())
    assert conn.exchange(post, Deadline.after(2.0)).status == 200
    timeout = conn.sock.gettimeout()
    assert timeout is not None and 1.0 < timeout <= 2.0
