"""Changelog reading, coalescing, state and the pass, against the fake target."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_env import app_conn, make_app

from dynasync import changelog, sql, state, syncpass, tables
from dynasync.exceptions import StateError

DDL = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"


def test_many_changes_to_one_key_collapse_to_one_write(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, DDL)
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    for i in range(50):
        c.execute("UPDATE t SET v = ? WHERE id = 1", (f"v{i}",))
    reads = {name: t.read for name, t in tables.load(app.conn, app.config).items()}
    batch = changelog.read_slice(app.conn, reads, 0, 1000)
    assert batch is not None and batch.entries == 51 and batch.keys == 1
    r = syncpass.Syncer(app).run_pass()
    assert r.applied == 1 and fake.requests == 1
    assert list(fake.items("target-t").values()) == [{"id": {"N": "1"}, "v": {"S": "v49"}}]


def test_insert_then_delete_in_one_pass_is_a_delete(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, DDL)
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    c.execute("DELETE FROM t")
    r = syncpass.Syncer(app).run_pass()
    assert dict(r.deletes) == {"t": 1} and not fake.items("target-t")


def test_batches_are_bounded_and_the_mark_advances(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, DDL, batch_size=7)
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(30)])
    r = syncpass.Syncer(app).run_pass()
    assert r.slices == 5 and r.entries == 30 and r.high_water_mark == 30
    assert len(fake.items("target-t")) == 30
    assert state.high_water_mark(app.conn) == 30
    # Pruned, except the row at the mark.
    assert app.conn.execute("SELECT seq FROM _dynasync_changelog").fetchall() == [(30,)]


def test_drained_changelog_never_reuses_a_seq(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, DDL)
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    c.execute("INSERT INTO t VALUES (2, 'a')")
    syncpass.Syncer(app).run_pass()
    c.execute("INSERT INTO t VALUES (3, 'a')")
    (seq,) = app.conn.execute("SELECT max(seq) FROM _dynasync_changelog").fetchone()
    assert seq == 3
    syncpass.Syncer(app).run_pass()
    assert state.high_water_mark(app.conn) == 3


def test_pass_reads_only_what_was_pending_at_its_start(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, DDL, batch_size=2)
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(4)])
    r = syncpass.Syncer(app).run_pass(until=2)
    assert r.high_water_mark == 2 and changelog.pending(app.conn, 2) == 2


def test_state_ahead_of_changelog_is_detected(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, DDL)
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    syncpass.Syncer(app).run_pass()
    c.execute("DELETE FROM _dynasync_changelog")  # e.g. someone emptied it by hand
    c.execute("INSERT INTO t VALUES (2, 'a')")  # gets seq 1 again: at the mark
    with pytest.raises(StateError, match="ahead of the changelog"):
        syncpass.Syncer(app).run_pass()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("DROP TABLE _dynasync_state", "damaged"),
        ("UPDATE _dynasync_state SET value = 'garbage' WHERE name = 'high_water_mark'", "garbled"),
        ("DELETE FROM _dynasync_state", "missing"),
    ],
)
def test_damaged_state_is_reported(tmp_path: Path, damage: str, message: str) -> None:
    app, _ = make_app(tmp_path, DDL)
    app_conn(app).execute(damage)
    with pytest.raises(StateError, match=message):
        syncpass.Syncer(app).run_pass()


def test_not_installed(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, DDL)
    c = app_conn(app)
    for stmt in sql.DROP_OWN_TABLES:
        c.execute(stmt)
    with pytest.raises(StateError, match="dynasync init"):
        syncpass.Syncer(app).run_pass()


def test_poison_row_is_a_dead_letter_and_retried_when_it_changes(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 1e308), (2, 'fine')")
    r = syncpass.Syncer(app).run_pass()
    assert r.rejected == 1 and len(fake.items("target-t")) == 1
    (dl,) = state.dead_letters(app.conn)
    assert dl.table == "t" and dl.k1 == 1 and "number range" in dl.reason
    c.execute("UPDATE t SET v = 1.5 WHERE id = 1")
    syncpass.Syncer(app).run_pass()
    assert state.dead_letters(app.conn) == [] and len(fake.items("target-t")) == 2


def test_null_key_row_is_a_dead_letter_and_its_delete_is_a_noop(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id TEXT PRIMARY KEY, v)")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (NULL, 'x')")
    syncpass.Syncer(app).run_pass()
    assert [d.reason for d in state.dead_letters(app.conn)] == ["key column 'id' is NULL"]
    c.execute("DELETE FROM t")
    syncpass.Syncer(app).run_pass()
    assert state.dead_letters(app.conn) == [] and not fake.items("target-t")


def test_reconcile_after_rebuild_survives_a_failed_first_attempt(tmp_path: Path) -> None:
    from fakes import throttle_then_succeed

    from dynasync.exceptions import TargetUnavailableError

    app, fake = make_app(tmp_path, DDL)
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    syncpass.Syncer(app).run_pass()
    c.executescript("CREATE TABLE t2 (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t2 SELECT * FROM t; "
                    "DROP TABLE t; ALTER TABLE t2 RENAME TO t; INSERT INTO t VALUES (2, 'unseen');")
    fake.fault = throttle_then_succeed(10**6)
    with pytest.raises(TargetUnavailableError):
        syncpass.Syncer(app).run_pass()
    # The triggers are back already, but the reconcile is still owed.
    assert app.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = '_dynasync_ins_t'").fetchone() == (1,)
    fake.fault = None
    r = syncpass.Syncer(app).run_pass()  # a fresh process
    assert r.reconciled == ["t"]
    assert sorted(int(i["id"]["N"]) for i in fake.items("target-t").values()) == [1, 2]
    assert syncpass.Syncer(app).run_pass().reconciled == []


def test_verify_retries_unprocessed_keys(tmp_path: Path) -> None:
    from dynasync import verify

    app, fake = make_app(tmp_path, DDL)
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(10)])
    syncpass.Syncer(app).run_pass()
    real_get = fake.batch_get
    calls = {"n": 0}

    def partial_get(table: str, keys: list) -> tuple[list, list]:  # type: ignore[type-arg]
        calls["n"] += 1
        items, _ = real_get(table, keys[:3])
        return items, list(keys[3:])  # DynamoDB may leave keys unprocessed under load

    fake.batch_get = partial_get  # type: ignore[method-assign]
    r = verify.verify(app)
    assert r.in_sync and r.tables[0].rows == 10 and calls["n"] == 4


def test_state_written_by_another_layout_version_is_refused(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, DDL)
    assert app.conn.execute("SELECT value FROM _dynasync_state WHERE name = 'schema_version'").fetchone() == ("2",)
    app_conn(app).execute("UPDATE _dynasync_state SET value = '3' WHERE name = 'schema_version'")  # a newer release's
    with pytest.raises(StateError, match="layout version '3'"):
        syncpass.Syncer(app).run_pass()


def test_backfill_progress_is_typed(tmp_path: Path) -> None:
    import dataclasses

    from dynasync import backfill
    from dynasync.config import BackfillConfig
    from dynasync.writes import RowRef

    app, _ = make_app(tmp_path, "CREATE TABLE t (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b))", batch_size=10)
    app_conn(app).executemany("INSERT INTO t VALUES (?, ?, 'x')", [("k", i) for i in range(25)])
    app.config = dataclasses.replace(app.config, backfill=BackfillConfig(chunk_size=10))
    backfill.backfill(app)
    (progress,) = state.backfill_progress(app.conn).values()
    assert progress == state.BackfillProgress("t", RowRef("t", "k", 24), 25, True)
