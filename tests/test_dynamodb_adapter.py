"""The boto3 adapter against moto (fast, in-process) for the plumbing, and
error classification against DynamoDB Local for what moto does not validate."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from dynasync import config
from dynasync.dynamodb import DynamoTarget
from dynasync.exceptions import RetryableError, TableMissingError, ValidationError
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


def test_the_adapter_says_which_retryable_errors_are_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.exceptions

    t = DynamoTarget(cfg("http://127.0.0.1:9"))

    def failing(code: str, status: int) -> Any:
        def call(**_: Any) -> Any:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "BatchWriteItem",
            )
        return call

    for code, status, throttle in [("ProvisionedThroughputExceededException", 400, True),
                                   ("ThrottlingException", 400, True), ("RequestLimitExceeded", 400, True),
                                   ("InternalServerError", 500, False), ("ServiceUnavailable", 503, False)]:
        monkeypatch.setattr(t._client, "batch_write_item", failing(code, status))
        with pytest.raises(RetryableError) as info:
            t.batch_write("x", [put({"id": {"N": "1"}})])
        assert info.value.code == code and info.value.throttle is throttle
