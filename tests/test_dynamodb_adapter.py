"""The boto3 adapter against moto (fast, in-process) for the plumbing, and
error classification against DynamoDB Local for what moto does not validate."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from dynasync import config
from dynasync.dynamodb import DynamoTarget
from dynasync.exceptions import RetryableError, TableMissingError, TargetError, ValidationError
from dynasync.target import delete, put


def cfg(endpoint: str | None = None) -> config.DynamoConfig:
    data: dict[str, Any] = {"source": {"database": "x.db"}, "tables": [{"source": "t", "target": "ttt"}],
                            "dynamodb": {"region": "us-east-1"}}
    if endpoint:
        data["dynamodb"]["endpoint_url"] = endpoint
    return config.parse(data).dynamodb


@mock_aws
def test_create_describe_write_read_scan_with_moto() -> None:
    t = DynamoTarget(cfg())
    assert t.describe("tbl") is None
    t.create_table("tbl", (("pk", "S"), ("sk", "N")))
    info = t.describe("tbl")
    assert info is not None and info.key_schema == (("pk", "S"), ("sk", "N")) and info.identity
    reqs = [put({"pk": {"S": "a"}, "sk": {"N": str(i)}, "b": {"B": b"\x00"}}) for i in range(5)]
    assert t.batch_write("tbl", reqs) == []
    assert t.batch_write("tbl", [delete({"pk": {"S": "a"}, "sk": {"N": "0"}})]) == []
    items, unprocessed = t.batch_get("tbl", [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    assert unprocessed == [] and items[0]["b"] == {"B": b"\x00"}
    page, nxt = t.scan("tbl", None)
    assert len(page) == 4 and nxt is None
    boto3.client("dynamodb", region_name="us-east-1")  # moto is active: no network


@mock_aws
def test_missing_table_is_classified_with_moto() -> None:
    t = DynamoTarget(cfg())
    with pytest.raises(TableMissingError):
        t.batch_write("nope", [put({"id": {"S": "x"}})])


def test_validation_errors_from_dynamodb_local(ddb_local: Any) -> None:
    t = DynamoTarget(cfg(ddb_local.endpoint))
    t.create_table("adapter-validation", (("id", "N"),))
    with pytest.raises(ValidationError, match="duplicates"):
        t.batch_write("adapter-validation", [put({"id": {"N": "1"}}), delete({"id": {"N": "1"}})])
    with pytest.raises(ValidationError):
        t.batch_write("adapter-validation", [put({"id": {"N": str(i)}}) for i in range(26)])
    with pytest.raises(ValidationError):
        t.batch_write("adapter-validation", [put({"id": {"N": "1" * 39}})])


def test_unreachable_endpoint_is_retryable() -> None:
    from ddblocal import free_port

    c = cfg(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError):
        DynamoTarget(c).batch_write("x", [put({"id": {"N": "1"}})])


CODES = [("ProvisionedThroughputExceededException", 400, RetryableError, True),
         ("ThrottlingException", 400, RetryableError, True), ("RequestLimitExceeded", 400, RetryableError, True),
         ("InternalServerError", 500, RetryableError, False), ("ServiceUnavailable", 503, RetryableError, False),
         ("ValidationException", 400, ValidationError, None),
         ("ItemCollectionSizeLimitExceededException", 400, ValidationError, None),
         ("ResourceNotFoundException", 400, TableMissingError, None),
         ("AccessDeniedException", 400, TargetError, None), ("UnrecognizedClientException", 400, TargetError, None)]


@pytest.mark.parametrize("lean", [True, False])
def test_the_adapter_classifies_every_error_the_same_on_both_paths(lean: bool) -> None:
    from replystub import ReplyStub, error

    by_code = {code: error(code, status) for code, status, _, _ in CODES}
    current: list[str] = []
    stub = ReplyStub(lambda op, body: by_code[current[0]])
    try:
        t = DynamoTarget(cfg(stub.endpoint))
        assert (t._wire is not None) is True  # the lean path is on for a plain endpoint
        if not lean:
            t._wire = None  # botocore's own path, as behind a proxy
        for code, _, kind, throttle in CODES:
            current[:] = [code]
            with pytest.raises(kind) as info:
                t.batch_write("x", [put({"id": {"N": "1"}})])
            assert type(info.value) is kind, (code, info.value)
            if kind is RetryableError:
                assert info.value.code == code and info.value.throttle is throttle  # type: ignore[attr-defined]
    finally:
        stub.close()
