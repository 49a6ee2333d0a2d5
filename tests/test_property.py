"""Random SQL against the sync: inserts, updates, deletes, REPLACEs, upserts
and key changes over a small key space, interleaved with passes, crashes
(a pass killed after some of its writes reached DynamoDB) and injected
faults. DynamoDB must equal SQLite at the end."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Env
from equality import assert_in_sync
from faultproxy import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynasync import capture, config, syncpass
from dynasync.app import App
from dynasync.dynamodb import DynamoTarget
from dynasync.target import WriteRequest

KEYS = st.integers(0, 6)
EMAILS = st.sampled_from(["a", "b", "c", None])
# Inside DynamoDB's number range (poison values have their own tests), so every
# row must arrive and the final check can demand zero dead letters.
FLOATS = st.floats(allow_nan=False, min_value=-1e100, max_value=1e100).filter(lambda f: f == 0 or abs(f) > 1e-100)
VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), FLOATS,
                   st.text(max_size=5), st.binary(max_size=5), st.none())

STATEMENTS = st.one_of(
    st.tuples(st.just("INSERT OR IGNORE INTO t VALUES (?, ?, ?)"), st.tuples(KEYS, EMAILS, VALUES)),
    st.tuples(st.just("INSERT OR REPLACE INTO t VALUES (?, ?, ?)"), st.tuples(KEYS, EMAILS, VALUES)),
    st.tuples(st.just("REPLACE INTO t VALUES (?, ?, ?)"), st.tuples(KEYS, EMAILS, VALUES)),
    st.tuples(st.just("INSERT INTO t VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v"),
              st.tuples(KEYS, EMAILS, VALUES)),
    st.tuples(st.just("INSERT INTO t VALUES (?, ?, ?) ON CONFLICT DO NOTHING"), st.tuples(KEYS, EMAILS, VALUES)),
    st.tuples(st.just("UPDATE t SET v = ? WHERE id = ?"), st.tuples(VALUES, KEYS)),
    st.tuples(st.just("UPDATE OR REPLACE t SET id = ? WHERE id = ?"), st.tuples(KEYS, KEYS)),
    st.tuples(st.just("UPDATE OR REPLACE t SET email = ? WHERE id = ?"), st.tuples(EMAILS, KEYS)),
    st.tuples(st.just("UPDATE t SET id = id + 1 WHERE id = ?"), st.tuples(KEYS)),
    st.tuples(st.just("DELETE FROM t WHERE id = ?"), st.tuples(KEYS)),
    st.tuples(st.just("DELETE FROM t WHERE email = ?"), st.tuples(EMAILS)),
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("sql"), st.lists(STATEMENTS, min_size=1, max_size=6)),
        st.tuples(st.just("pass"), st.none()),
        st.tuples(st.just("crash"), st.integers(0, 2)),
        st.tuples(st.just("faults"), st.booleans()),
    ),
    max_size=25,
)


class Crash(BaseException):
    """Stands in for kill -9: nothing after it runs, no handler sees it."""


class CrashingTarget(DynamoTarget):
    def __init__(self, cfg: config.DynamoConfig, after: int) -> None:
        super().__init__(cfg)
        self.after = after

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> list[WriteRequest]:
        if self.after == 0:
            raise Crash()
        self.after -= 1
        return super().batch_write(table, requests)


@pytest.fixture(scope="module")
def module_proxy(ddb_local: Any) -> Any:
    p = FaultProxy(ddb_local.port, seed=3)
    yield p
    p.close()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
def test_random_sql_passes_crashes_and_faults_converge(
    steps: list[tuple[str, Any]], ddb_local: Any, ddb: Any, module_proxy: FaultProxy
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dynasync-prop-"))
    env = Env(tmp, ddb_local.endpoint, ddb)
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, v)")
    env.write_config(endpoint=module_proxy.endpoint,
                     dynamodb={"max_retry_time": 30.0, "max_concurrency": 2}, sync={"batch_size": 3})
    module_proxy.rates.update(throttle=0, error500=0, drop_after_write=0, partial=0)
    env.run(capture.init)
    app_db = sqlite3.connect(env.db_path, isolation_level=None)
    try:
        for kind, arg in steps:
            if kind == "sql":
                app_db.execute("BEGIN")
                for stmt, params in arg:
                    # A statement that violates a constraint fails, as it would for the application.
                    with contextlib.suppress(sqlite3.IntegrityError):
                        app_db.execute(stmt, params)
                app_db.execute("COMMIT")
            elif kind == "pass":
                env.run(syncpass.sync)
            elif kind == "crash":
                cfg = config.load(env.config_path)
                app = App(cfg, lambda c, n=arg: CrashingTarget(c.dynamodb, n))
                try:
                    syncpass.sync(app)
                except Crash:
                    pass
                finally:
                    app.close()
            else:
                rate = 0.3 if arg else 0.0
                module_proxy.rates.update(throttle=rate, error500=rate, drop_after_write=rate, partial=rate)
        module_proxy.rates.update(throttle=0, error500=0, drop_after_write=0, partial=0)
        env.run(syncpass.sync)
        assert env.rows("SELECT count(*) FROM _dynasync_dead_letters") == [(0,)]
        assert_in_sync(env, "t")
    finally:
        app_db.close()
        env.client.delete_table(TableName=env.tables["t"])


