"""The database file may not be the continuation of the one synced last: a
restore from an older copy, or another database renamed over the path, is
noticed (by a pass in a new process, or by a running daemon), said, and every
table reconciled, so DynamoDB ends equal to the file as it is, with no ghost."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from fakes import FakeTarget
from unit_env import app_conn, make_app, synced_then_restored

from dynasync import capture, state, syncpass
from dynasync.app import App
from dynasync.member import Member
from dynasync.status import status


def _ids(fake: FakeTarget) -> dict[int, str]:
    return {int(i["id"]["N"]): i["v"]["S"] for i in fake.items("target-t").values()}


def _rows(path: Path) -> dict[int, str]:
    with sqlite3.connect(path) as c:
        return dict(c.execute("SELECT id, v FROM t"))


def test_a_database_restored_from_an_older_copy_is_reconciled_whole(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    synced_then_restored(app, 100)  # dynasync stopped; the backup restored
    restored = App(app.config, lambda _cfg: fake)
    r = syncpass.Syncer(restored).run_pass()
    assert r.identity is not None and "older copy" in r.identity and r.reconciled == ["t"]
    assert _ids(fake) == _rows(restored.config.database)  # no ghost, nothing missing or stale
    s = status(restored)
    assert s.identity_change is not None and "older copy" in s.identity_change
    # The application goes on writing, reusing positions: nothing is skipped.
    c = app_conn(restored)
    c.executemany("INSERT INTO t VALUES (?, 'after')", [(i,) for i in range(200, 210)])
    c.execute("DELETE FROM t WHERE id = 5")
    assert syncpass.Syncer(restored).run_pass().identity is None
    assert _ids(fake) == _rows(restored.config.database)


def test_another_database_renamed_over_the_path_while_running_is_locked_and_reconciled(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'old file')", [(i,) for i in range(50)])
    c.close()
    app.close()
    m = Member(app.config.database, app.config, App(app.config, lambda _cfg: fake), lambda: None)
    m.turn()
    m.turn()
    assert len(_ids(fake)) == 50
    # The application rebuilds its database from scratch and renames it over the old one.
    new = tmp_path / "rebuilt.db"
    n = sqlite3.connect(new, isolation_level=None)
    n.execute("PRAGMA journal_mode=WAL")
    n.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    n.executemany("INSERT INTO t VALUES (?, 'new file')", [(i,) for i in range(40, 70)])
    n.close()  # checkpointed: the new file is whole on its own
    os.replace(new, app.config.database)
    for _ in range(6):
        m.turn()
    assert m.health == "healthy", m.error
    assert _ids(fake) == _rows(app.config.database)  # the old file's rows gone from DynamoDB too
    assert m.app.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = '_dynasync_ins_t'").fetchone() == (1,)
    assert m.app._lock is not None and m.app._lock.still_the_file()  # the lock is on the new file
    assert state.identity_change(m.app.conn) is not None
    m.close()


def test_the_same_database_going_on_is_not_taken_for_another(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c = app_conn(app)
    for n in range(3):
        c.execute("INSERT INTO t VALUES (?, 'v')", (n,))
        assert syncpass.Syncer(app).run_pass().identity is None  # a new process each time
    c.execute("VACUUM")  # rewrites the file in place: still the same database
    assert syncpass.Syncer(app).run_pass().identity is None
    assert capture.init is not None and len(_ids(fake)) == 3


def test_a_restore_to_the_mark_of_a_pass_that_died_after_dynamodb_took_its_writes_is_noticed(
    tmp_path: Path,
) -> None:
    """A pass sent rows DynamoDB acknowledged and died before saving its mark;
    then the database came back from a copy taken at that same mark, without
    those rows. The mark did not go back, yet the items written from them are
    ghosts now: dynasync remembers what it sent, not only what it saved."""
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'kept')", [(i,) for i in range(5)])
    syncpass.Syncer(app).run_pass()
    backup = tmp_path / "backup.db"
    with sqlite3.connect(backup) as b:
        c.backup(b)
    c.executemany("INSERT INTO t VALUES (?, 'lost')", [(i,) for i in range(5, 9)])
    _pass_dies_after_dynamodb_took_its_writes(app)
    assert len(fake.items("target-t")) == 9  # DynamoDB took them
    c.close()
    app.close()
    for side in ("-wal", "-shm"):
        Path(f"{app.config.database}{side}").unlink(missing_ok=True)
    os.replace(backup, app.config.database)
    restored = App(app.config, lambda _cfg: fake)
    r = syncpass.Syncer(restored).run_pass()
    assert r.identity is not None and "older copy" in r.identity
    assert _ids(fake) == _rows(restored.config.database) == {i: "kept" for i in range(5)}


def test_a_pass_that_died_after_dynamodb_took_its_writes_is_not_taken_for_a_restore(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(5)])
    _pass_dies_after_dynamodb_took_its_writes(app)
    app.close()
    again = App(app.config, lambda _cfg: fake)
    c.execute("INSERT INTO t VALUES (99, 'after')")  # the application goes on meanwhile
    r = syncpass.Syncer(again).run_pass()
    assert r.identity is None and r.reconciled == []
    assert _ids(fake) == _rows(again.config.database)


def _pass_dies_after_dynamodb_took_its_writes(app: App) -> None:
    """A pass whose process is killed between DynamoDB's acknowledgement and the commit."""
    original = state.commit_pass

    def die(*_: object, **__: object) -> None:
        raise KeyboardInterrupt("killed between DynamoDB's acknowledgement and the commit")

    state.commit_pass = die  # type: ignore[assignment]
    try:
        with contextlib.suppress(KeyboardInterrupt):
            syncpass.Syncer(app).run_pass()
    finally:
        state.commit_pass = original
