"""One database's turn in the daemon (dynasync.member): a bounded pass, then a
background step every turn, whatever the backlog; any error fails the
database alone, which backs off, and recovers."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_env import app_conn, make_app

from dynasync import member, state
from dynasync.member import Member


def test_a_table_added_live_is_copied_while_the_database_has_a_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                         "CREATE TABLE n (id INTEGER PRIMARY KEY, v TEXT)",
                         tables={"t": "target-t", "n": "target-n"}, batch_size=10)
    state.start_backfill(app.conn, ["t"])
    state.finish_backfill(app.conn, "t", [])  # t is synced; n was just added: never copied
    c = app_conn(app)
    c.executemany("INSERT INTO n VALUES (?, 'old row')", [(i,) for i in range(50)])
    c.executemany("INSERT INTO t VALUES (?, 'backlog')", [(i,) for i in range(2000)])
    app.close()
    monkeypatch.setattr(member, "TURN_SECONDS", 0.0)  # every pass stops after one slice
    m = Member(app.config.database, app.config, app, lambda: None)
    assert m.turn() is True  # the backlog is far from done...
    assert m.position.pending > 1000
    assert len(fake.items("target-n")) == 50  # ...and the new table was copied all the same
    m.close()


def test_any_error_fails_the_database_alone_and_it_recovers(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.close()
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    m = Member(app.config.database, app.config, app, lambda: None)

    def bug(*_: object) -> int:
        raise ZeroDivisionError("a bug, not a DynamoDB error")

    fake.fault = bug
    assert m.turn() is False
    assert m.health == "failing" and m.error == "ZeroDivisionError: a bug, not a DynamoDB error"
    assert m.retry_at > 0 and m.failures == 1
    with app.conn:
        found = state.failure(app.conn)
    assert found is not None and "ZeroDivisionError" in found.error  # status says so
    fake.fault = None
    m.turn()
    assert m.health == "healthy" and m.failures == 0 and len(fake.items("target-t")) == 1
    assert state.failure(app.conn) is None
    m.close()


def test_a_failure_a_killed_process_left_recorded_is_cleared_by_the_next_process(tmp_path: Path) -> None:
    """kill -9 while the turns fail leaves the failure in the state; the next
    daemon's first good turn clears it, or status says it fails for ever."""
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.close()
    app_conn(app).execute("INSERT INTO t VALUES (1, 'a')")
    killed = Member(app.config.database, app.config, app, lambda: None)

    def down(*_: object) -> int:
        raise ZeroDivisionError("DynamoDB down")

    fake.fault = down
    assert killed.turn() is False and state.failure(app.conn) is not None
    fake.fault = None  # DynamoDB is back
    killed.app.close()  # the process is killed: its lock goes with it, the recorded failure stays
    m = Member(app.config.database, app.config, app, lambda: None)
    m.turn()
    assert m.health == "healthy" and len(fake.items("target-t")) == 1
    assert state.failure(app.conn) is None
    m.close()


def test_a_database_whose_application_holds_the_write_lock_is_skipped_not_waited_on(tmp_path: Path) -> None:
    import time

    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.close()
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'a')")
    m = Member(app.config.database, app.config, app, lambda: None)
    holder = app_conn(app)
    holder.execute("BEGIN IMMEDIATE")  # a long application transaction
    started = time.monotonic()
    assert m.turn() is False
    assert time.monotonic() - started < 5.0  # not the 30 s busy timeout
    assert m.health != "failing" and m.ready and not fake.items("target-t")
    holder.execute("ROLLBACK")
    m.turn()
    assert len(fake.items("target-t")) == 1
    m.close()


def test_a_stop_in_the_step_after_a_pass_that_went_through_still_says_it_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DynamoDB came back and the pass went through; SIGTERM arrived during the
    background step after it. The log says it recovered, and status stops
    saying the database fails."""
    from dynasync.exceptions import RetryableError, TargetUnavailableError

    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.close()
    app_conn(app).execute("INSERT INTO t VALUES (1, 'a')")
    m = Member(app.config.database, app.config, app, lambda: None)

    def down(_: object) -> int:
        raise RetryableError("ServiceUnavailable", "down")

    fake.fault = down
    m.turn()
    assert m.health == "failing"
    fake.fault = None

    def stopped_during_the_step() -> bool:
        app.stop.set()
        raise TargetUnavailableError("stopped: no new write is sent to DynamoDB")

    m.background.step = stopped_during_the_step  # type: ignore[method-assign]
    m.retry_at = 0.0
    with caplog.at_level("INFO"):
        m.turn()
    assert len(fake.items("target-t")) == 1
    assert any(r.getMessage() == "recovered" for r in caplog.records)
    assert state.failure(app.conn) is None
    m.close()
