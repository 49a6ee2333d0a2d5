"""The boto3 adapter against moto (fast, in-process) for the plumbing, and
error classification against DynamoDB Local for what moto does not validate."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dynasync import config
from dynasync.dynamodb import DynamoTarget
from dynasync.exceptions import ConfigError, RetryableError, TableMissingError, TargetError, ValidationError
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


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No region in the environment or in any profile; returns the AWS config file's path."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "aws-config"
    path.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    return path


def test_no_region_anywhere_is_refused_naming_every_place_to_set_one(nowhere: Path) -> None:
    c = config.parse({"source": {"database": "x.db"}, "tables": [{"source": "t", "target": "ttt"}]}).dynamodb
    with pytest.raises(ConfigError) as info:
        DynamoTarget(c)
    message = str(info.value)
    assert "\n" not in message
    for place in ("[dynamodb] region", "AWS_REGION", "AWS_DEFAULT_REGION", "profile"):
        assert place in message


@pytest.mark.parametrize("where", ["AWS_REGION", "AWS_DEFAULT_REGION", "profile"])
def test_a_region_set_in_the_environment_or_the_profile_is_used(
    where: str, nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if where == "profile":
        nowhere.write_text("[default]\nregion = ap-south-1\n")
    else:
        monkeypatch.setenv(where, "ap-south-1")
    c = config.parse({"source": {"database": "x.db"}, "tables": [{"source": "t", "target": "ttt"}]}).dynamodb
    assert DynamoTarget(c)._client.meta.region_name == "ap-south-1"


def test_every_command_that_talks_to_dynamodb_fails_in_one_line_without_a_region(
    nowhere: Path, tmp_path: Path
) -> None:
    import sqlite3

    from replystub import ReplyStub
    from test_cli import DYNASYNC

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    stub = ReplyStub(lambda op, body: (200, {}))
    try:
        path = tmp_path / "dynasync.toml"
        path.write_text(f'[source]\ndatabase = "{db}"\n[dynamodb]\nendpoint_url = "{stub.endpoint}"\n'
                        'create_tables = true\n[[tables]]\nsource = "t"\ntarget = "ttt"\n')
        for command in ("init", "sync", "backfill", "verify", "run"):
            p = subprocess.run([DYNASYNC, command, "--config", str(path)], capture_output=True, text=True,
                               timeout=120)
            assert p.returncode == 2, (command, p.stderr)
            lines = [line for line in p.stderr.splitlines() if "error" in line]
            assert len(lines) == 1 and "no AWS region" in lines[0] and "[dynamodb] region" in lines[0], p.stderr
        assert stub.bodies == []  # DynamoDB was never asked anything, in us-east-1 or anywhere
    finally:
        stub.close()
