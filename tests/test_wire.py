"""The lean BatchWriteItem path (dynasync.wire) against botocore: the bytes on
the wire decode to the request botocore would send, and every answer is
checked as strictly."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replystub import ReplyStub, sigv4_valid

from dynasync import config, wire
from dynasync.dynamodb import DynamoTarget
from dynasync.exceptions import RetryableError
from dynasync.target import delete, put


def botocore_body(table: str, requests: list[dict[str, Any]]) -> bytes:
    """What botocore itself serializes for this BatchWriteItem."""
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    model = client.meta.service_model.operation_model("BatchWriteItem")
    request = client._serializer.serialize_to_request({"RequestItems": {table: requests}}, model)
    return request["body"]  # type: ignore[no-any-return]


CORPUS: list[dict[str, Any]] = [
    {"id": {"N": "1"}, "s": {"S": ""}, "b": {"B": b""}},
    {"id": {"N": "-9223372036854775808"}, "s": {"S": "nul\x00inside, é ✓ 𝄞, \"quotes\", \\back"}},
    {"id": {"N": "1.2345678901234567890123456789012345678E+125"}, "b": {"B": bytes(range(256))}},
    {"id": {"N": "1E-130"}, "t": {"BOOL": True}, "f": {"BOOL": False}, "n": {"NULL": True}},
    {"id": {"N": "0"}, "l": {"L": [{"N": "1"}, {"S": "x"}, {"L": []}, {"M": {}}, {"B": b"\xff"}]}},
    {"id": {"N": "2"}, "m": {"M": {"a": {"M": {"b": {"L": [{"NULL": True}]}}}, "": {"S": "empty name"}}}},
    {"id": {"N": "3"}, "big": {"S": "x" * 100_000}, "blob": {"B": b"\x00" * 50_000}},
]


def test_the_body_decodes_to_botocores_request_for_every_type_and_edge_value() -> None:
    requests = [put(item) for item in CORPUS] + [delete({"id": {"N": "4"}}), delete({"k": {"B": b"\x01"}})]
    assert json.loads(wire.body("tbl", requests)) == json.loads(botocore_body("tbl", requests))


ATTRIBUTE = st.recursive(
    st.one_of(
        st.builds(lambda s: {"S": s}, st.text()),
        st.builds(lambda n: {"N": str(n)}, st.integers() | st.decimals(allow_nan=False, allow_infinity=False)),
        st.builds(lambda b: {"B": b}, st.binary()),
        st.builds(lambda b: {"BOOL": b}, st.booleans()),
        st.just({"NULL": True}),
    ),
    lambda inner: st.builds(lambda x: {"L": x}, st.lists(inner, max_size=4))
    | st.builds(lambda x: {"M": x}, st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=8), ATTRIBUTE, min_size=1, max_size=6),
                min_size=1, max_size=25))
def test_any_items_decode_to_botocores_request(items: list[dict[str, Any]]) -> None:
    requests = [put(i) for i in items]
    assert json.loads(wire.body("t", requests)) == json.loads(botocore_body("t", requests))


def target(endpoint: str) -> DynamoTarget:
    data = {"source": {"database": "x.db"}, "tables": [{"source": "t", "target": "ttt"}],
            "dynamodb": {"region": "us-east-1", "endpoint_url": endpoint, "read_timeout": 2.0}}
    t = DynamoTarget(config.parse(data).dynamodb)
    assert t._wire is not None
    return t


def test_unprocessed_items_come_back_as_the_requests_that_were_sent() -> None:
    stub = ReplyStub(lambda op, body: (200, {"UnprocessedItems": body["RequestItems"]}))
    try:
        requests = [put({"id": {"N": "1"}, "b": {"B": b"\x00\xfe"}, "l": {"L": [{"B": b"x"}]}})]
        assert target(stub.endpoint).batch_write("t", requests) == requests
    finally:
        stub.close()


@pytest.mark.parametrize("lean", [True, False])
def test_a_damaged_response_is_retried_on_both_paths(lean: bool) -> None:
    stub = ReplyStub(lambda op, body: (200, {"UnprocessedItems": {}}))
    stub.bad_crc = True
    try:
        t = target(stub.endpoint)
        if not lean:
            t._wire = None
        with pytest.raises(RetryableError, match="CRC32"):
            t.batch_write("t", [put({"id": {"N": "1"}})])
    finally:
        stub.close()


def test_each_request_is_signed_with_sigv4_over_one_keep_alive_connection() -> None:
    stub = ReplyStub(lambda op, body: (200, {"UnprocessedItems": {}}))
    try:
        t = target(stub.endpoint)
        t.batch_write("t", [put({"id": {"N": "1"}})])
        t.batch_write("t", [put({"id": {"N": "2"}})])
        assert len(stub.bodies) == 2 and stub.ports[0] == stub.ports[1]
        for headers, body in zip(stub.headers, stub.bodies, strict=True):
            assert headers["x-amz-target"] == "DynamoDB_20120810.BatchWriteItem"
            assert sigv4_valid("POST", "/", headers, body)
            assert "/us-east-1/dynamodb/aws4_request" in headers["authorization"]
            assert not sigv4_valid("POST", "/", headers, body + b" ")  # the check can fail
            assert not sigv4_valid("POST", "/", {**headers, "host": "127.0.0.2"}, body)
    finally:
        stub.close()


def test_a_refused_connection_is_retryable() -> None:
    from ddblocal import free_port

    with pytest.raises(RetryableError):
        target(f"http://127.0.0.1:{free_port()}").batch_write("t", [put({"id": {"N": "1"}})])


def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced_at_once() -> None:
    stub = ReplyStub(lambda op, body: (200, {"UnprocessedItems": {}}))
    stub.server.RequestHandlerClass.timeout = 0.2  # type: ignore[attr-defined]  # an idle connection lives 0.2 s
    try:
        t = target(stub.endpoint)
        t.batch_write("t", [put({"id": {"N": "1"}})])
        time.sleep(0.6)
        t.batch_write("t", [put({"id": {"N": "2"}})])  # no RetryableError: sent again on a new connection
        assert len(stub.bodies) == 2 and stub.ports[0] != stub.ports[1]
    finally:
        stub.close()


@pytest.mark.parametrize(("endpoint", "host", "path"), [
    ("https://DynamoDB.Example:443", "dynamodb.example", "/"),
    ("http://user:pw@Example.COM:80/", "example.com", "/"),
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "/"),
    ("https://[::1]:443", "[::1]", "/"),
    ("http://h.example:8000/pre/fix", "h.example:8000", "/pre/fix"),
])
def test_each_request_carries_the_host_and_path_botocore_signs(endpoint: str, host: str, path: str) -> None:
    """Whatever way the endpoint is written, the Host header sent is the one SigV4
    covers (lower case, no userinfo, no default port), and the path is botocore's."""
    data = {"source": {"database": "x.db"}, "tables": [{"source": "t", "target": "ttt"}],
            "dynamodb": {"region": "us-east-1", "endpoint_url": endpoint}}
    client = DynamoTarget(config.parse(data).dynamodb)._wire
    assert client is not None
    headers = client._sign(b"{}")
    assert headers["Host"] == host and client.path == path
    assert sigv4_valid("POST", path, {k.lower(): v for k, v in headers.items()}, b"{}")
    assert "dynasync/" in headers["User-Agent"]
