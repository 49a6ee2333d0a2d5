"""Continuous verification ([verify] rows_per_second): a rolling cycle over each
table's rows, then its items, repairs what went wrong behind dynasync's back
through the normal write path, skips keys a pass is about to write, and heals a
restore nobody could detect (the state directory lost with it) within one cycle."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from fakes import FakeTarget
from unit_env import app_conn, make_app, synced_then_restored

from dynasync import config, identity, state, syncpass
from dynasync.app import App
from dynasync.member import Member
from dynasync.values import key_text


def _verifying(app: App, fake: FakeTarget) -> App:
    state.start_backfill(app.conn, ["t"])
    state.finish_backfill(app.conn, "t", [])  # copied already: the background has nothing to copy
    raw = {**app.config.raw, "verify": {"rows_per_second": 1e6}}
    return App(config.parse(raw, app.config.path), lambda _cfg: fake)


def _ids(fake: FakeTarget) -> dict[int, str]:
    return {int(i["id"]["N"]): i["v"]["S"] for i in fake.items("target-t").values()}


def _rows(app: App) -> dict[int, str]:
    with sqlite3.connect(app.config.database) as c:
        return dict(c.execute("SELECT id, v FROM t"))


def _cycle(m: Member, app: App) -> None:
    """Turns until a full cycle ended, and a pass after it."""
    before = state.timestamp(app.conn, state.AUDIT_CYCLE)
    for _ in range(100):
        m.turn()
        if state.timestamp(m.app.conn, state.AUDIT_CYCLE) != before:
            break
    m.turn()


def test_what_went_wrong_behind_dynasyncs_back_is_repaired_within_a_cycle(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(150)])
    syncpass.Syncer(app).run_pass()
    app.close()
    store = fake.items("target-t")
    store[key_text({"id": {"N": "3"}})]["v"] = {"S": "stale"}  # changed by someone else
    del store[key_text({"id": {"N": "7"}})]  # deleted by someone else
    store[key_text({"id": {"N": "999"}})] = {"id": {"N": "999"}, "v": {"S": "ghost"}}  # no row
    m = Member(app.config.database, _verifying(app, fake).config, _verifying(app, fake), lambda: None)
    _cycle(m, app)
    assert _ids(fake) == _rows(app)
    counts = m.background.audit.taken()
    assert counts.checked >= 150 + 150 and counts.mismatches == 3, counts
    m.close()


def test_a_restore_nobody_could_detect_heals_within_one_cycle(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    synced_then_restored(app, 60)
    shutil.rmtree(identity.state_directory())  # the host lost its state directory too
    verifying = _verifying(app, fake)
    m = Member(app.config.database, verifying.config, verifying, lambda: None)
    _cycle(m, app)
    assert m.health == "healthy", m.error
    assert _ids(fake) == _rows(app)


def test_a_key_with_changes_pending_is_not_counted_as_a_mismatch(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(20)])
    syncpass.Syncer(app).run_pass()
    app.close()
    verifying = _verifying(app, fake)
    m = Member(app.config.database, verifying.config, verifying, lambda: None)
    c.execute("UPDATE t SET v = 'pending' WHERE id = 4")
    m.background.audit.step(m.syncer.schema.refresh().tables)  # before any pass applies it
    assert m.background.audit.taken().mismatches == 0
    m.close()
