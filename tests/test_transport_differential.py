"""Every transport case against both BatchWriteItem paths: the lean one
(dynasync.wire over dynasync.http1) and botocore's own. Both must come to the
same outcome, and the right one: an endpoint written any way botocore accepts,
a private CA, proxies as botocore resolves them, and every way a reply can go
wrong (leftover bytes, a slow drip, malformed bodies)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import trustme
from replystub import ForwardProxy, Raw, Reply, ReplyStub, error, http_reply

from dynasync import config
from dynasync.dynamodb import DynamoTarget
from dynasync.exceptions import DynasyncError, RetryableError
from dynasync.target import WriteRequest, delete, put

TABLE = "ttt"
ITEM = put({"id": {"N": "1"}})
PATHS = ("lean", "botocore")
Outcome = tuple[str, Any]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


def write_bundle(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def bundle(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The private CA's bundle, as AWS_CA_BUNDLE names it."""
    path = write_bundle(ca, tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(path))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    return path


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def target(endpoint: str, lean: bool, **dynamodb: Any) -> DynamoTarget:
    data = {"source": {"database": "x.db"}, "tables": [{"source": "t", "target": TABLE}],
            "dynamodb": {"region": "us-east-1", "endpoint_url": endpoint, "connect_timeout": 1.0,
                         "read_timeout": 2.0, **dynamodb}}
    t = DynamoTarget(config.parse(data).dynamodb)
    if not lean:
        t._wire = None  # botocore's own transport, as behind a proxy
    return t


def outcome(t: DynamoTarget, requests: list[WriteRequest] | None = None) -> Outcome:
    """What one BatchWriteItem came to: ("ok", unprocessed), ("retry", code) or (error type, message)."""
    try:
        return "ok", t.batch_write(TABLE, requests or [ITEM])
    except RetryableError as e:
        return "retry", e.code
    except DynasyncError as e:
        return type(e).__name__, str(e)


def on_both(endpoint: str, act: Callable[[DynamoTarget], Outcome], **dynamodb: Any) -> dict[str, Outcome]:
    return {path: act(target(endpoint, path == "lean", **dynamodb)) for path in PATHS}


@contextlib.contextmanager
def serving(answer: Callable[[str, dict[str, Any]], Reply | Raw], **kwargs: Any) -> Iterator[ReplyStub]:
    stub = ReplyStub(answer, **kwargs)
    try:
        yield stub
    finally:
        stub.close()


def accept(op: str, body: dict[str, Any]) -> Reply:
    return 200, {"UnprocessedItems": {}}


# --- endpoints: TLS and the Host that is signed --------------------------------


@pytest.mark.parametrize("named_by", ["AWS_CA_BUNDLE", "the profile's ca_bundle", "REQUESTS_CA_BUNDLE"])
def test_a_private_ca_botocore_is_told_of_is_trusted_on_both_paths(
    named_by: str, ca: trustme.CA, server_tls: ssl.SSLContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_bundle(ca, tmp_path)
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    if named_by == "the profile's ca_bundle":
        profile = tmp_path / "aws-config"
        profile.write_text(f"[default]\nca_bundle = {path}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(profile))
    else:
        monkeypatch.setenv(named_by, str(path))
    with serving(accept, tls=server_tls) as stub:
        got = on_both(stub.endpoint, outcome)
        assert got == {"lean": ("ok", []), "botocore": ("ok", [])}
        assert stub.signed == [True, True]


def test_a_certificate_the_bundle_does_not_sign_is_refused_on_both_paths(
    server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", certifi.where())  # public CAs only
    with serving(accept, tls=server_tls) as stub:
        got = on_both(stub.endpoint, outcome)
        assert [kind for kind, _ in got.values()] == ["retry", "retry"], got
        assert stub.bodies == []


def bind_or_skip(port: int) -> None:
    try:
        with socket.create_server(("127.0.0.1", port)):
            pass
    except OSError as e:
        pytest.skip(f"cannot listen on port {port} here: {e}")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_endpoint_naming_the_default_port_is_signed_as_sent(
    scheme: str, server_tls: ssl.SSLContext, bundle: Path
) -> None:
    port = 443 if scheme == "https" else 80
    bind_or_skip(port)
    tls = server_tls if scheme == "https" else None
    with serving(accept, tls=tls, port=port) as stub:
        got = on_both(f"{scheme}://localhost:{port}", outcome)
        assert got == {"lean": ("ok", []), "botocore": ("ok", [])}
        assert stub.signed == [True, True]
        assert [h["host"] for h in stub.headers] == ["localhost", "localhost"]


@pytest.mark.parametrize("endpoint", ["{scheme}://LocalHost:{port}", "{scheme}://user@127.0.0.1:{port}",
                                      "{scheme}://user:secret@LOCALHOST:{port}/"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_upper_case_host_or_userinfo_is_signed_as_sent(
    endpoint: str, scheme: str, server_tls: ssl.SSLContext, bundle: Path
) -> None:
    tls = server_tls if scheme == "https" else None
    with serving(accept, tls=tls) as stub:
        got = on_both(endpoint.format(scheme=scheme, port=stub.port), outcome)
        assert got == {"lean": ("ok", []), "botocore": ("ok", [])}
        assert stub.signed == [True, True]
        assert stub.headers[0]["host"] == stub.headers[1]["host"] and "user" not in stub.headers[0]["host"]


def test_both_paths_name_dynasync_and_botocore_in_their_user_agent() -> None:
    with serving(accept) as stub:
        on_both(stub.endpoint, outcome)
        for headers in stub.headers:
            agent = headers.get("user-agent", "")
            assert "dynasync/" in agent and "Botocore/" in agent, agent


# --- proxies, as botocore resolves them -----------------------------------------


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.close()


def test_an_http_proxy_carries_both_paths(proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with serving(accept) as stub:
        got = on_both(stub.endpoint, outcome)
        assert got == {"lean": ("ok", []), "botocore": ("ok", [])}
        assert proxy.seen == [f"POST {stub.endpoint}/", f"POST {stub.endpoint}/"]
        assert stub.signed == [True, True]


def test_an_https_endpoint_is_tunnelled_through_the_proxy_on_both_paths(
    proxy: ForwardProxy, server_tls: ssl.SSLContext, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with serving(accept, tls=server_tls) as stub:
        got = on_both(stub.endpoint, outcome)
        assert got == {"lean": ("ok", []), "botocore": ("ok", [])}
        assert proxy.seen == [f"CONNECT 127.0.0.1:{stub.port}"] * 2


@pytest.mark.parametrize("env", [{"HTTPS_PROXY": "{proxy}"},  # a proxy for https only: not for an http endpoint
                                 {"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1"}])
def test_a_proxy_botocore_would_not_use_is_not_used_and_the_lean_path_stays_on(
    env: dict[str, str], proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(proxy=proxy.url))
    with serving(accept) as stub:
        assert target(stub.endpoint, True)._wire is not None
        got = on_both(stub.endpoint, outcome)
        assert got == {"lean": ("ok", []), "botocore": ("ok", [])}
        assert proxy.seen == []


# --- replies that are not what the protocol says ---------------------------------


@pytest.mark.parametrize("pause", [0.0, 0.2])  # in the reply's own segment, or while the connection sits idle
def test_bytes_left_over_after_a_reply_are_never_read_as_the_next_reply(pause: float) -> None:
    """A middlebox appends a stray 200 to the first reply; the second request is throttled."""
    first = Raw([http_reply(200, b'{"UnprocessedItems": {}}'), http_reply(200, b'{"UnprocessedItems": {}}')],
                pause=pause)
    calls: list[str] = []

    def answer(op: str, body: dict[str, Any]) -> Reply | Raw:
        calls.append(op)
        return first if len(calls) % 2 == 1 else error("ProvisionedThroughputExceededException")

    with serving(answer) as stub:
        got = {}
        for path in PATHS:
            t = target(stub.endpoint, path == "lean")
            before = outcome(t)
            time.sleep(0.4)
            got[path] = (before, outcome(t))
        throttled = ("retry", "ProvisionedThroughputExceededException")
        assert got == {"lean": (("ok", []), throttled), "botocore": (("ok", []), throttled)}


DRIPS = {
    "body": [b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n", *[b" "] * 200],
    "status line": [bytes([c]) for c in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"],
}


@pytest.mark.parametrize("drip", DRIPS)
def test_a_reply_trickled_a_byte_at_a_time_ends_at_the_request_deadline(drip: str) -> None:
    """Each byte comes well within the read timeout; the request still ends at
    connect_timeout + read_timeout, a retryable error, its connection closed."""
    with serving(lambda op, body: Raw(DRIPS[drip], pause=0.1)) as stub:
        for path in PATHS:
            t = target(stub.endpoint, path == "lean", connect_timeout=0.5, read_timeout=1.0)
            started = time.monotonic()
            assert outcome(t) == ("retry", "DeadlineExceeded"), path
            assert time.monotonic() - started < 2.5, path
        deadline = time.monotonic() + 2
        while len(stub.cut) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(stub.cut) == 2  # the client closed the connection on both paths


MALFORMED = {
    "200 null": http_reply(200, b"null"),
    "200 a list": http_reply(200, b"[]"),
    "200 not JSON": http_reply(200, b"<html>ok</html>"),
    "200 no body": http_reply(200, b""),
    "UnprocessedItems a list": http_reply(200, b'{"UnprocessedItems": []}'),
    "a table's requests not a list": http_reply(200, b'{"UnprocessedItems": {"ttt": {}}}'),
    "a request neither put nor delete": http_reply(200, b'{"UnprocessedItems": {"ttt": [{"PutRequest": 1}]}}'),
    "B with bad padding": http_reply(200, json.dumps({"UnprocessedItems": {TABLE: [
        {"PutRequest": {"Item": {"id": {"N": "1"}, "b": {"B": "AAA"}}}}]}}).encode()),
    "400 a list": http_reply(400, b"[]"),
    "502 from a load balancer": http_reply(502, b"<html>Bad Gateway</html>", crc=False),
    "bad CRC32": http_reply(200, b'{"UnprocessedItems": {}}').replace(b"x-amz-crc32: ", b"x-amz-crc32: 1"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_reply_is_a_retryable_error_on_both_paths(case: str) -> None:
    with serving(lambda op, body: Raw([MALFORMED[case]])) as stub:
        got = on_both(stub.endpoint, outcome)
        code = "CRC32Mismatch" if case == "bad CRC32" else "BadResponse"
        assert got == {"lean": ("retry", code), "botocore": ("retry", code)}


def test_unprocessed_items_are_decoded_by_the_attribute_value_grammar_on_both_paths() -> None:
    """Attribute and map-key names such as "B" are names, not types; every type round-trips."""
    requests = [
        put({"id": {"N": "1"}, "B": {"S": "a string attribute named B"},
             "m": {"M": {"B": {"S": "a map key named B"}, "S": {"B": b"\x00\xff"}, "L": {"L": [{"B": b"x"}]}}},
             "sets": {"L": [{"SS": ["a", "b"]}, {"NS": ["1", "2.5"]}, {"BS": [b"\x01", b""]}]},
             "scalars": {"M": {"t": {"BOOL": True}, "n": {"NULL": True}, "e": {"S": ""}}}}),
        delete({"B": {"B": base64.b64decode("AQID")}}),
    ]
    with serving(lambda op, body: (200, {"UnprocessedItems": body["RequestItems"]})) as stub:
        got = on_both(stub.endpoint, lambda t: outcome(t, requests))
        assert got == {"lean": ("ok", requests), "botocore": ("ok", requests)}
