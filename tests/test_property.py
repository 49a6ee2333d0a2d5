"""Random schemas and random SQL against the sync: a drawn table (key types
and affinities, collations, WITHOUT ROWID, generated columns, every kind of
UNIQUE index) takes inserts, updates, deletes, REPLACEs, upserts, key and
rowid changes over a small key space, interleaved with passes, crashes (a
pass killed after some of its writes reached DynamoDB) and injected faults.
DynamoDB must equal SQLite at the end, with no dead letters."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Env
from equality import assert_in_sync, assert_templated_in_sync
from faultproxy import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynasync import capture, config, syncpass
from dynasync.app import App
from dynasync.dynamodb import DynamoTarget
from dynasync.target import WriteRequest

# Inside DynamoDB's number range (poison values have their own tests), so every
# row must arrive and the final check can demand zero dead letters.
FLOATS = st.floats(allow_nan=False, min_value=-1e100, max_value=1e100).filter(lambda f: f == 0 or abs(f) > 1e-100)
VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), FLOATS, st.text(max_size=5), st.binary(max_size=5), st.none())
# Texts that collide under NOCASE and RTRIM, but never empty (an empty key is a dead letter).
TEXTS = st.sampled_from(["a", "A", "a ", "b", "B", "é", "É"])
EMAILS = st.one_of(TEXTS, st.none())

# (declared type, DynamoDB key type, the values a key of that type takes)
KEY_KINDS = {
    "INTEGER": ("N", st.integers(0, 6)),
    "REAL": ("N", st.sampled_from([0, 1, 1.5, 2, -3.25])),
    "NUMERIC": ("N", st.sampled_from([0, 1, 2.5, 3, 10**15])),
    "TEXT": ("S", TEXTS),
    # No declared type: BLOB affinity, a B key, holding TEXT or BLOBs (never the same bytes as both).
    "": ("B", st.one_of(TEXTS, st.sampled_from([b"\x00", b"\xff\x01"]))),
}
COLLATIONS = st.sampled_from(["", " COLLATE NOCASE", " COLLATE RTRIM"])
UNIQUE_SHAPES = [
    None,
    "CREATE UNIQUE INDEX t_u ON t (email)",
    "CREATE UNIQUE INDEX t_u ON t (email COLLATE NOCASE)",
    "CREATE UNIQUE INDEX t_u ON t (email) WHERE v IS NOT NULL",
    "CREATE UNIQUE INDEX t_u ON t (lower(email))",
    "CREATE UNIQUE INDEX t_u ON t (g)",
]


@dataclass(frozen=True)
class Shape:
    """A drawn table: its DDL, key, and the strategies of its statements."""

    ddl: tuple[str, ...]
    key: tuple[str, ...]
    key_types: dict[str, str]
    key_values: tuple[Any, ...]  # one strategy per key column
    rowid: bool  # a rowid table: rowid changes and rowid REPLACEs apply
    generated: bool
    # Single-table design: the item lives under its email (a non-key column), so
    # it moves when the email changes; rows without one are filtered out.
    templated: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """The [[tables]] mapping options of this shape."""
        if not self.templated:
            return {}
        return {"partition_key": {"name": "PK", "template": "E#{email}"},
                "sort_key": {"name": "SK", "template": "#".join(f"{{{k}}}" for k in self.key)},
                "where": "email IS NOT NULL"}

    def statements(self) -> st.SearchStrategy[tuple[str, tuple[Any, ...]]]:
        """Random statements over this table."""
        keys = st.tuples(*self.key_values)
        cols = ", ".join([*self.key, "email", "v"])
        marks = ", ".join("?" for _ in [*self.key, "email", "v"])
        by_key = " AND ".join(f"{k} = ?" for k in self.key)
        row = st.builds(lambda k, e, v: (*k, e, v), keys, EMAILS, VALUES)
        options = [
            st.tuples(st.just(f"INSERT OR IGNORE INTO t ({cols}) VALUES ({marks})"), row),
            st.tuples(st.just(f"INSERT OR REPLACE INTO t ({cols}) VALUES ({marks})"), row),
            st.tuples(st.just(f"REPLACE INTO t ({cols}) VALUES ({marks})"), row),
            st.tuples(st.just(f"INSERT INTO t ({cols}) VALUES ({marks}) ON CONFLICT ({', '.join(self.key)}) "
                              "DO UPDATE SET v = excluded.v"), row),
            st.tuples(st.just(f"INSERT INTO t ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"), row),
            st.tuples(st.just(f"UPDATE t SET v = ? WHERE {by_key}"), st.builds(lambda v, k: (v, *k), VALUES, keys)),
            st.tuples(st.just(f"UPDATE OR REPLACE t SET {self.key[-1]} = ? WHERE {by_key}"),
                      st.builds(lambda n, k: (n, *k), self.key_values[-1], keys)),
            st.tuples(st.just(f"UPDATE OR REPLACE t SET email = ? WHERE {by_key}"),
                      st.builds(lambda e, k: (e, *k), EMAILS, keys)),
            st.tuples(st.just(f"DELETE FROM t WHERE {by_key}"), keys),
            st.tuples(st.just("DELETE FROM t WHERE email = ?"), st.tuples(EMAILS)),
        ]
        if self.rowid:
            options += [
                st.tuples(st.just(f"UPDATE OR REPLACE t SET rowid = ? WHERE {by_key}"),
                          st.builds(lambda r, k: (r, *k), st.integers(1, 8), keys)),
                st.tuples(st.just(f"INSERT OR REPLACE INTO t (rowid, {cols}) VALUES (?, {marks})"),
                          st.builds(lambda r, x: (r, *x), st.integers(1, 8), row)),
            ]
        return st.one_of(options)


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    ipk = draw(st.booleans()) and draw(st.booleans())
    width = 1 if ipk else draw(st.integers(1, 2))
    kinds = ["INTEGER"] if ipk else [draw(st.sampled_from(sorted(KEY_KINDS))) for _ in range(width)]
    key = tuple(f"k{i}" for i in range(1, width + 1))
    columns = []
    for name, kind in zip(key, kinds, strict=True):
        collation = draw(COLLATIONS) if kind in ("TEXT", "") and not ipk else ""
        columns.append(f"{name} {kind}{collation}".rstrip() + (" PRIMARY KEY" if ipk else " NOT NULL"))
    columns.append(f"email TEXT{draw(COLLATIONS)}")
    columns.append("v")
    generated = draw(st.booleans())
    if generated:
        columns.append(f"g TEXT AS (lower(email)) {draw(st.sampled_from(['STORED', 'VIRTUAL']))}")
    without_rowid = not ipk and draw(st.booleans())
    pk = "" if ipk else f", PRIMARY KEY ({', '.join(key)})"
    ddl = [f"CREATE TABLE t ({', '.join(columns)}{pk})" + (" WITHOUT ROWID" if without_rowid else "")]
    unique = draw(st.sampled_from([u for u in UNIQUE_SHAPES if generated or u is None or "(g)" not in u]))
    if unique:
        ddl.append(unique)
    return Shape(
        ddl=tuple(ddl),
        key=key,
        key_types={k: KEY_KINDS[kind][0] for k, kind in zip(key, kinds, strict=True)},
        key_values=tuple(KEY_KINDS[kind][1] for kind in kinds),
        rowid=not without_rowid,
        generated=generated,
        # A template cannot render a BLOB key: only for typed keys.
        templated="" not in kinds and draw(st.booleans()),
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


def steps(shape: Shape) -> st.SearchStrategy[list[tuple[str, Any]]]:
    return st.lists(
        st.one_of(
            st.tuples(st.just("sql"), st.lists(shape.statements(), min_size=1, max_size=6)),
            st.tuples(st.just("pass"), st.none()),
            st.tuples(st.just("crash"), st.integers(0, 2)),
            st.tuples(st.just("faults"), st.booleans()),
        ),
        max_size=25,
    )


# DYNASYNC_PROPERTY_EXAMPLES=500 scripts/test tests/test_property.py for a long run.
EXAMPLES = int(os.environ.get("DYNASYNC_PROPERTY_EXAMPLES", "40"))


# All the examples are one pytest test: its time limit grows with their number
# (about 2 s each alone on 2 cores, and several times that beside the other
# xdist workers), instead of the suite's 300 s for one test.
@pytest.mark.timeout(15 * EXAMPLES)
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_schemas_sql_passes_crashes_and_faults_converge(
    data: st.DataObject, ddb_local: Any, ddb: Any, module_proxy: FaultProxy
) -> None:
    shape = data.draw(shapes(), label="shape")
    plan = data.draw(steps(shape), label="steps")
    tmp = Path(tempfile.mkdtemp(prefix="dynasync-prop-"))
    env = Env(tmp, ddb_local.endpoint, ddb)
    for stmt in shape.ddl:
        env.sql(stmt)
    env.table("t")
    env.options["t"] = shape.options
    env.write_config(endpoint=module_proxy.endpoint,
                     dynamodb={"max_retry_time": 30.0, "max_concurrency": 2}, sync={"batch_size": 3})
    module_proxy.rates.update(throttle=0, error500=0, drop_after_write=0, partial=0)
    env.run(capture.init)
    app_db = sqlite3.connect(env.db_path, isolation_level=None)
    try:
        for kind, arg in plan:
            _step(env, app_db, module_proxy, kind, arg)
        module_proxy.rates.update(throttle=0, error500=0, drop_after_write=0, partial=0)
        env.run(syncpass.sync)
        assert env.rows("SELECT tbl, k1, k2, reason FROM _dynasync_dead_letters") == []
        if shape.templated:
            sk = "#".join(f"{{{k}}}" for k in shape.key)
            assert_templated_in_sync(env, "t", "E#{email}", sk, "email IS NOT NULL")
        else:
            assert_in_sync(env, "t", shape.key_types)
    finally:
        app_db.close()
        env.client.delete_table(TableName=env.tables["t"])


def _step(env: Env, app_db: sqlite3.Connection, proxy: FaultProxy, kind: str, arg: Any) -> None:
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
        app = App(config.load(env.config_path), lambda c, n=arg: CrashingTarget(c.dynamodb, n))
        try:
            syncpass.sync(app)
        except Crash:
            pass
        finally:
            app.close()
    else:
        rate = 0.3 if arg else 0.0
        proxy.rates.update(throttle=rate, error500=rate, drop_after_write=rate, partial=rate)
