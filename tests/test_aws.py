"""The whole pipeline against real DynamoDB. Opt-in: DYNASYNC_TEST_AWS=1 and
credentials from boto3's standard chain; otherwise skipped. It creates its
own on-demand tables and deletes them afterwards."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import boto3
import pytest
from equality import dynamo_side, sqlite_side

from dynasync import backfill, capture, config, syncpass, verify
from dynasync.app import App

pytestmark = pytest.mark.aws


def _enabled() -> bool:
    if os.environ.get("DYNASYNC_TEST_AWS") != "1":
        return False
    return boto3.session.Session().get_credentials() is not None


@pytest.mark.skipif(not _enabled(), reason="set DYNASYNC_TEST_AWS=1 with AWS credentials to run against real DynamoDB")
def test_pipeline_against_real_dynamodb(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, v REAL)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, f"u{i}@x", i / 3) for i in range(60)])
    target = f"dynasync-test-{uuid.uuid4().hex[:10]}"
    cfg = config.parse({"source": {"database": str(db)}, "dynamodb": {"create_tables": True},
                        "tables": [{"source": "t", "target": target}]})
    client = boto3.client("dynamodb")
    try:
        with App(cfg) as app:
            capture.init(app)
            backfill.backfill(app)
        conn.execute("UPDATE t SET v = -v WHERE id < 10")
        conn.execute("DELETE FROM t WHERE id BETWEEN 20 AND 29")
        conn.execute("INSERT OR REPLACE INTO t VALUES (100, 'u0@x', 1.5)")
        with App(cfg) as app:
            syncpass.sync(app)
            assert verify.verify(app).in_sync
        assert sqlite_side(str(db), "t", {"id": "N"}) == dynamo_side(client, target, ["id"])
    finally:
        conn.close()
        client.delete_table(TableName=target)
