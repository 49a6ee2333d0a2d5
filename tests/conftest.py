from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from ddblocal import DynamoDBLocal
from s3local import S3Local

from dynasync import config as config_mod
from dynasync.app import App

# `-n auto` (pyproject's addopts): the whole suite runs on this many xdist
# workers. Most tests wait on DynamoDB Local, a subprocess or a sleep rather
# than on the CPU: on 2 cores 4 workers are as quick as 3 when the machine is
# idle and quicker when it is shared; 2 are slower, 6 spend more CPU (README,
# Development).
WORKERS = 4

# The longest tests (file::function, longest first; about 65 s down to 4 s
# each, run one at a time on 2 cores). On several workers they start first:
# one of them started last would leave the other workers idle at the end.
LONGEST_FIRST = (
    "test_property.py::test_random_schemas_sql_passes_crashes_and_faults_converge",
    "test_faults.py::test_each_fault_converges",
    "test_faults.py::test_all_faults_and_latency_together_with_backfill_and_repair",
    "test_promise_ops.py::test_sigterm_during_a_long_reconcile_stops_promptly",
    "test_corner_cases.py::test_large_transaction_and_delete_without_where",
    "test_promise_ops.py::test_sigterm_stops_within_10s_while_dynamodb_hangs",
    "test_crash.py::test_application_never_sees_locked_and_wal_stays_bounded",
    "test_wire.py::test_any_items_decode_to_botocores_request",
    "test_crash.py::test_kill_9_during_backfill_resumes",
    "test_reload.py::test_a_table_added_on_reload_is_copied_while_the_others_keep_their_lag",
    "test_metrics.py::test_metrics_follow_the_daemon",
    "test_oversize_crash.py::test_kill_9_loop_with_large_rows_leaves_no_orphan_and_no_dangling_pointer",
    "test_oversize_crash.py::test_s3_out_of_reach_holds_the_rows_back_and_the_daemon_stays_up",
    "test_crash.py::test_kill_9_loop_converges",
    "test_cli.py::test_backfill_progress_bar_only_on_a_terminal",
    "test_corner_cases.py::test_writes_during_backfill_are_neither_lost_nor_stale",
    "test_cli.py::test_full_lifecycle",
    "test_crash.py::test_kill_9_loop_converges_when_every_update_moves_the_item",
    "test_fleet.py::test_kill_9_in_the_middle_of_a_fleet_pass",
    "test_reload.py::test_reload_adds_and_removes_tables_while_churn_runs",
    "test_cli.py::test_sync_against_unreachable_dynamodb_fails_in_bounded_time",
)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: no error when xdist is not loaded
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: WORKERS for the whole suite; files or tests named on the command line run in one process."""
    return WORKERS if config.args_source == pytest.Config.ArgsSource.TESTPATHS else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, the longest tests first (each worker collects, in the same order)."""
    if not hasattr(config, "workerinput"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(f"{item.path.name}::{getattr(item, 'originalname', item.name)}",
                                         len(rank)))


@pytest.fixture(scope="session")
def ddb_local() -> Iterator[DynamoDBLocal]:
    server = DynamoDBLocal()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_local() -> Iterator[S3Local]:
    server = S3Local()
    yield server
    server.stop()


@dataclass
class S3Bucket:
    """A bucket of the test's own on moto's S3 server, and a client of it."""

    client: Any
    bucket: str
    endpoint: str

    def keys(self) -> set[str]:
        """Every object's key in the bucket."""
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            found.update(o["Key"] for o in page.get("Contents", []))
        return found

    def body(self, bucket: str, key: str) -> bytes:
        """An object's body (the `fetch` decode_item takes)."""
        data: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data


@pytest.fixture
def s3(s3_local: S3Local) -> S3Bucket:
    """A new bucket on moto's S3 server."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_local.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = S3Bucket(client, unique("bucket").lower(), s3_local.endpoint)
    client.create_bucket(Bucket=bucket.bucket)
    return bucket


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("aws"):
        return  # the opt-in real-AWS test uses the caller's own credentials
    # Never reach a real account from the tests: fixed dummy credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("DYNASYNC_CONFIG", raising=False)
    # What dynasync saw of each database is kept outside it: in this test's own directory.
    monkeypatch.setenv("STATE_DIRECTORY", str(request.getfixturevalue("tmp_path") / "dynasync-state"))


@pytest.fixture
def ddb(ddb_local: DynamoDBLocal) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=ddb_local.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Env:
    """A SQLite database, a config file and DynamoDB Local for one test."""

    def __init__(self, tmp_path: Path, endpoint: str, client: Any) -> None:
        self.dir = tmp_path
        self.db_path = tmp_path / "app.db"
        self.config_path = tmp_path / "dynasync.toml"
        self.endpoint = endpoint
        self.current_endpoint = endpoint
        self.client = client
        self.tables: dict[str, str] = {}
        self.options: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, dict[str, Any]] = {}
        conn = sqlite3.connect(self.db_path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()

    def app_conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=5)
        return conn

    def sql(self, *statements: str, params: Any = ()) -> None:
        conn = self.app_conn()
        try:
            for s in statements:
                conn.execute(s, params) if params else conn.execute(s)
        finally:
            conn.close()

    def table(self, source: str, ddl: str | None = None) -> str:
        if ddl:
            self.sql(ddl)
        target = unique(source.replace(" ", "_").replace('"', "")[:20] or "t")
        target = "".join(c if (c.isascii() and c.isalnum()) or c in "_-." else "_" for c in target)
        self.tables[source] = target
        self.write_config()
        return target

    def write_config(self, endpoint: str | None = None, **sections: dict[str, Any]) -> Path:
        for k, v in sections.items():
            self.extra.setdefault(k, {}).update(v)
        if endpoint:
            self.current_endpoint = endpoint
        dyn = {"endpoint_url": self.current_endpoint, "region": "us-east-1", "create_tables": True,
               "max_retry_time": 5.0}
        dyn.update(self.extra.get("dynamodb", {}))
        sync = {"interval": 0.5}
        sync.update(self.extra.get("sync", {}))
        lines = [f"[source]\ndatabase = {_toml(str(self.db_path))}", "[dynamodb]"]
        lines += [f"{k} = {_toml(v)}" for k, v in dyn.items()]
        lines.append("[sync]")
        lines += [f"{k} = {_toml(v)}" for k, v in sync.items()]
        for section, values in self.extra.items():
            if section not in ("dynamodb", "sync"):
                lines.append(f"[{section}]")
                lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
        for s, t in self.tables.items():
            lines.append(f"[[tables]]\nsource = {_toml(s)}\ntarget = {_toml(t)}")
            lines += [f"{k} = {_toml(v)}" for k, v in self.options.get(s, {}).items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def app(self) -> App:
        return App(config_mod.load(self.config_path))

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.app() as app:
            return fn(app, *args, **kwargs)

    def items(self, source: str) -> list[dict[str, Any]]:
        target = self.tables[source]
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": target, "ConsistentRead": True}
        while True:
            page = self.client.scan(**kwargs)
            out.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def rows(self, query: str) -> list[Any]:
        conn = self.app_conn()
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def env(tmp_path: Path, ddb_local: DynamoDBLocal, ddb: Any) -> Env:
    return Env(tmp_path, ddb_local.endpoint, ddb)
