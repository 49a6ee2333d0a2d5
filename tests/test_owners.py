"""dynasync.owners, step by step: which row owns which DynamoDB item of a
tracked table, planned against the real _dynasync_keys record of a SQLite
database with dynasync installed. Each slice is read from the changelog,
planned, its claims recorded (intend), "sent" to a FakeTarget standing in for
DynamoDB (which may refuse a write, or never be reached), and committed, the
way dynasync.syncpass does it, so a test can stop between any two steps, run
two slices in a pipeline, or crash and replay. Every test checks what
DynamoDB ends up holding as well as the record: no item is left that no row
produces, and no row's item is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeTarget

from dynasync import capture, changelog, config, owners, sql, state, tables
from dynasync.app import App
from dynasync.changelog import Slice
from dynasync.database import write_txn
from dynasync.values import key_text
from dynasync.writes import Change, DeadLetterKind, Rejected, RowRef, Write

TARGET = "target-t"
SLOTS = "CREATE TABLE {name} (id INTEGER PRIMARY KEY, slot TEXT, v TEXT)"
# The item's key is rendered from a non-key column: a row moves when its slot changes.
SLOTTED = {"partition_key": {"name": "PK", "template": "SLOT#{slot}"}}


def item(slot: str) -> str:
    """The item key (key_text) of a slot."""
    return key_text({"PK": {"S": f"SLOT#{slot}"}})


def row(k1: Any, table: str = "t") -> RowRef:
    return RowRef(table, k1)


@dataclass
class Batch:
    """A changelog slice, read and planned: one owners plan per target."""

    slice: Slice
    plans: list[owners.TargetPlan]

    @property
    def writes(self) -> list[Write]:
        return [w for p in self.plans for w in p.writes]

    def deletes(self) -> set[str]:
        return {w.key_text for w in self.writes if not w.is_put}

    def puts(self) -> dict[str, RowRef]:
        return {w.key_text: w.ref for w in self.writes if w.is_put}

    @property
    def rejected(self) -> list[Rejected]:
        return [r for p in self.plans for r in p.rejected]


@dataclass
class Sent:
    """What DynamoDB made of a batch's writes."""

    delivered: list[Write] = field(default_factory=list)
    refused: list[Rejected] = field(default_factory=list)


Refuse = Callable[[Write], bool]


def never(_: Write) -> bool:
    return False


class Sim:
    """One process syncing one database, step by step, against `dynamo`."""

    def __init__(self, app: App, dynamo: FakeTarget, limit: int = 1000) -> None:
        self.app = app
        self.dynamo = dynamo
        self.limit = limit
        self.synced = tables.load(app.conn, app.config)
        self.read_to = state.high_water_mark(app.conn)  # where the next slice starts

    @property
    def conn(self) -> sqlite3.Connection:
        return self.app.conn

    def sql(self, *statements: str) -> None:
        """Run statements as the application, in one transaction."""
        with sqlite3.connect(self.app.config.database, isolation_level=None) as c:
            c.execute("BEGIN")
            for s in statements:
                c.execute(s)
            c.execute("COMMIT")
        c.close()

    def plan(self, reverse: bool = False, meanwhile: Sequence[str] = ()) -> Batch:
        """Read the next slice and plan it per target (`reverse`: its changes in
        the opposite order; `meanwhile`: what the application does between the two)."""
        reads = {name: t.read for name, t in self.synced.items()}
        sl = changelog.read_slice(self.conn, reads, self.read_to, self.limit)
        assert sl is not None, "nothing pending"
        if meanwhile:
            self.sql(*meanwhile)
        self.read_to = sl.high
        by_target: dict[str, list[Change]] = {}
        for name, changes in sl.changes.items():
            t, columns = self.synced[name], sl.columns[name]
            assert t.tracked
            planned = by_target.setdefault(t.target, [])
            planned.extend(t.change(c.ref, columns, c.row, c.old, c.refused) for c in changes)
        plans = [
            owners.plan_target(self.conn, target, changes[::-1] if reverse else changes, self.synced)
            for target, changes in by_target.items()
        ]
        return Batch(sl, plans)

    def intend(self, batch: Batch) -> None:
        with write_txn(self.conn):
            owners.intend(self.conn, batch.plans)

    def send(self, batch: Batch, refuse: Refuse = never) -> Sent:
        """Apply a batch's writes to DynamoDB, which refuses those `refuse` names."""
        sent = Sent()
        for p in batch.plans:
            keys = [w.key_text for w in p.writes]
            assert len(keys) == len(set(keys)), f"one write per DynamoDB key: {keys}"
            for w in p.writes:
                if refuse(w):
                    sent.refused.append(Rejected(w.ref, "DynamoDB rejected the item", w, DeadLetterKind.REFUSED))
                    continue
                assert self.dynamo.batch_write(p.target, [w.request]) == []
                sent.delivered.append(w)
        return sent

    def commit(self, batch: Batch, sent: Sent, later: Batch | None = None) -> None:
        """What dynasync.syncpass commits once DynamoDB answered; `later`: the next slice, planned meanwhile."""
        rejected = batch.rejected + sent.refused
        delivered = [ref for p in batch.plans for ref in p.settled] + [w.ref for w in sent.delivered]

        def records(conn: sqlite3.Connection) -> None:
            after = later.plans if later is not None else ()
            freed = owners.commit(conn, batch.plans, sent.delivered, sent.refused, self.synced, after)
            owners.requeue_collisions(conn, freed, self.synced.values())

        state.commit_pass(self.conn, batch.slice.high, rejected, delivered, records=records)

    def step(self, refuse: Refuse = never) -> Batch:
        """One slice, start to end."""
        batch = self.plan()
        self.intend(batch)
        self.commit(batch, self.send(batch, refuse))
        return batch

    def sync(self) -> None:
        """Every pending slice, and those their commits queue again."""
        while changelog.pending(self.conn, self.read_to):
            self.step()

    def restart(self) -> Sim:
        """The process dies here; a new one starts from what the database holds."""
        self.app.close()
        return Sim(App(self.app.config, lambda _cfg: self.dynamo), self.dynamo, self.limit)

    def owners(self, target: str = TARGET) -> dict[str, RowRef]:
        """The record: item -> the row recorded as its owner."""
        rows = self.conn.execute(f"SELECT tbl, k1, k2, item FROM {sql.KEYS} WHERE target = ?", (target,))
        found: dict[str, RowRef] = {}
        for tbl, k1, k2, it in rows:
            assert it not in found, "one owner per item"
            found[it] = RowRef(tbl, k1, k2)
        return found

    def held(self, target: str = TARGET) -> dict[str, str]:
        """What DynamoDB holds: item -> the `v` of the row it was written for."""
        return {k: i["v"]["S"] for k, i in self.dynamo.items(target).items()}

    def dead(self) -> dict[RowRef, tuple[DeadLetterKind, str | None]]:
        """Dead letters: row -> (kind, the item a collision was refused)."""
        q = f"SELECT tbl, k1, k2, kind, item FROM {sql.DEAD_LETTERS}"
        return {RowRef(t, a, b): (DeadLetterKind(k), i) for t, a, b, k, i in self.conn.execute(q)}

    def queued(self) -> list[RowRef]:
        """Rows logged in the changelog after the mark."""
        q = f"SELECT tbl, k1, k2 FROM {sql.CHANGELOG} WHERE seq > ? ORDER BY seq"
        return [RowRef(*r) for r in self.conn.execute(q, (state.high_water_mark(self.conn),))]


def entry(source: str, slotted: bool = True) -> dict[str, Any]:
    """A [[tables]] entry writing to TARGET: keyed by slot, or by id."""
    return {"source": source, "target": TARGET, **(SLOTTED if slotted else {})}


def make_sim(
    tmp_path: Path, *rows: str, entries: Sequence[dict[str, Any]] = (), limit: int = 1000
) -> Sim:
    """Tables t (and any others `entries` names) of slotted rows, installed, with `rows` synced."""
    entries = list(entries) or [entry("t")]
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA journal_mode=WAL")
        for e in entries:
            c.execute(SLOTS.format(name=e["source"]))
    c.close()
    data = {
        "source": {"database": str(db)},
        "dynamodb": {"create_tables": True, "max_retry_time": 2.0},
        "tables": list(entries),
    }
    dynamo = FakeTarget()
    app = App(config.parse(data), lambda _cfg: dynamo)
    capture.init(app)
    sim = Sim(app, dynamo, limit)
    if rows:
        sim.sql(*rows)
        sim.sync()
    return sim


def reconfigure(sim: Sim, entries: Sequence[dict[str, Any]]) -> Sim:
    """The same database under a new config, in a new process."""
    sim.app.close()
    data = {**sim.app.config.raw, "tables": list(entries)}
    app = App(config.parse(data), lambda _cfg: sim.dynamo)
    capture.init(app)
    return Sim(app, sim.dynamo, sim.limit)


# --- record ----------------------------------------------------------------------


def test_a_rows_first_put_claims_its_item_recorded_before_the_put_is_sent(tmp_path: Path) -> None:
    sim = make_sim(tmp_path)
    sim.sql("INSERT INTO t VALUES (1, 'a', 'one')")
    batch = sim.plan()
    (plan,) = batch.plans
    assert plan.claims == {row(1): item("a")} and plan.kept == {}
    assert batch.puts() == {item("a"): row(1)} and batch.deletes() == set()
    assert sim.owners() == {}
    sim.intend(batch)
    assert sim.owners() == {item("a"): row(1)}  # recorded while DynamoDB holds nothing yet
    assert sim.held() == {}
    sim.commit(batch, sim.send(batch))
    assert sim.held() == {item("a"): "one"} and sim.owners() == {item("a"): row(1)}


def test_a_row_that_owns_its_item_puts_it_again_without_a_claim(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    sim.sql("UPDATE t SET v = 'one, new' WHERE id = 1")
    batch = sim.step()
    (plan,) = batch.plans
    assert plan.claims == {} and plan.kept == {row(1): item("a")}
    assert batch.puts() == {item("a"): row(1)} and batch.deletes() == set()
    assert sim.held() == {item("a"): "one, new"} and sim.owners() == {item("a"): row(1)}


# --- move ------------------------------------------------------------------------


def test_a_moved_row_puts_its_new_item_and_deletes_the_old_one_forgotten_once_acknowledged(
    tmp_path: Path,
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    sim.sql("UPDATE t SET slot = 'b' WHERE id = 1")
    batch = sim.plan()
    assert batch.puts() == {item("b"): row(1)} and batch.deletes() == {item("a")}
    assert batch.plans[0].claims == {row(1): item("b")}
    sim.intend(batch)
    # In flight, the record names both items: either may exist.
    assert sim.owners() == {item("a"): row(1), item("b"): row(1)}
    sim.commit(batch, sim.send(batch))
    assert sim.held() == {item("b"): "one"} and sim.owners() == {item("b"): row(1)}


def test_a_row_moving_twice_between_passes_writes_only_where_it_ends(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    sim.sql("UPDATE t SET slot = 'b' WHERE id = 1")
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1")
    batch = sim.step()
    assert batch.puts() == {item("c"): row(1)} and batch.deletes() == {item("a")}
    assert sim.held() == {item("c"): "one"} and sim.owners() == {item("c"): row(1)}


def test_a_row_moving_again_while_its_previous_move_is_in_flight_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    sim.sql("UPDATE t SET slot = 'b' WHERE id = 1")
    first = sim.plan()
    sim.intend(first)
    sent = sim.send(first)  # in flight: Put b, Delete a
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1")
    second = sim.plan()  # planned meanwhile, against the record of both items
    assert second.puts() == {item("c"): row(1)} and second.deletes() == {item("a"), item("b")}
    sim.intend(second)
    sim.commit(first, sent, later=second)
    sim.commit(second, sim.send(second))
    assert sim.held() == {item("c"): "one"} and sim.owners() == {item("c"): row(1)}


def test_a_row_moving_back_while_the_slice_deleting_its_item_is_in_flight_keeps_it_recorded(
    tmp_path: Path,
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    sim.sql("UPDATE t SET slot = 'b' WHERE id = 1")
    first = sim.plan()
    sim.intend(first)
    sent = sim.send(first)  # in flight: Put b, Delete a
    sim.sql("UPDATE t SET slot = 'a' WHERE id = 1")
    second = sim.plan()  # the record still names a: the row puts it again as its own
    assert second.plans[0].kept == {row(1): item("a")} and second.deletes() == {item("b")}
    sim.intend(second)
    sim.commit(first, sent, later=second)  # the Delete of a is acknowledged...
    assert item("a") in sim.owners()  # ...but the next slice puts it again: it stays recorded
    sim.commit(second, sim.send(second))
    assert sim.held() == {item("a"): "one"} and sim.owners() == {item("a"): row(1)}
    sim.sql("DELETE FROM t WHERE id = 1")  # so the row's going deletes it: no ghost
    sim.sync()
    assert sim.held() == {} and sim.owners() == {}


# --- collide ---------------------------------------------------------------------


def test_a_row_rendering_an_item_another_row_holds_is_a_collision_naming_that_row(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("UPDATE t SET slot = 'a' WHERE id = 2")
    batch = sim.step()
    (refused,) = batch.rejected
    assert refused.ref == row(2) and refused.kind is DeadLetterKind.COLLISION and refused.item == item("a")
    assert "row [1, None] of table 't'" in refused.reason
    assert batch.puts() == {} and batch.deletes() == {item("b")}  # its old item goes: it produces none
    assert sim.held() == {item("a"): "one"} and sim.owners() == {item("a"): row(1)}
    assert sim.dead() == {row(2): (DeadLetterKind.COLLISION, item("a"))}


@pytest.mark.parametrize("reverse", [False, True], ids=["owner-last", "owner-first"])
def test_the_recorded_owner_keeps_its_item_whatever_the_order_of_the_batch(
    tmp_path: Path, reverse: bool
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'b', 'one'), (2, 'a', 'two')")
    sim.sql("UPDATE t SET slot = 'a' WHERE id = 1", "UPDATE t SET v = 'two, new' WHERE id = 2")
    batch = sim.plan(reverse=reverse)
    sim.intend(batch)
    sim.commit(batch, sim.send(batch))
    assert [r.ref for r in batch.rejected] == [row(1)]
    assert sim.held() == {item("a"): "two, new"} and sim.owners() == {item("a"): row(2)}
    assert sim.dead() == {row(1): (DeadLetterKind.COLLISION, item("a"))}


@pytest.mark.parametrize(
    "leaves",
    ["UPDATE t SET slot = 'c' WHERE id = 1", "DELETE FROM t WHERE id = 1"],
    ids=["moved-on", "deleted"],
)
def test_a_stale_recorded_owner_is_taken_over(tmp_path: Path, leaves: str) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')", limit=1)
    # Row 2 takes slot a after row 1 left it, but row 2's change is read
    # first: row 1's record of a is stale when row 2's slice is planned.
    sim.sql("UPDATE t SET slot = 'a' WHERE id = 2", leaves)
    batch = sim.step()
    assert [c.ref for c in batch.slice.changes["t"]] == [row(2)]
    assert batch.rejected == [] and batch.plans[0].claims == {row(2): item("a")}
    assert sim.owners()[item("a")] == row(2)
    sim.sync()  # row 1's own change: its record of a is gone, so it deletes nothing of row 2's
    expected = {item("a"): "two"} | ({item("c"): "one"} if "UPDATE" in leaves else {})
    assert sim.held() == expected and sim.dead() == {}
    assert sim.owners() == {item("a"): row(2)} | ({item("c"): row(1)} if "UPDATE" in leaves else {})


def test_an_item_recorded_for_a_table_no_longer_configured_is_taken_over(tmp_path: Path) -> None:
    both = [entry("t"), entry("u")]
    sim = make_sim(tmp_path, "INSERT INTO u VALUES (7, 'a', 'u seven')", "INSERT INTO t VALUES (1, 'b', 'one')",
                   entries=both)
    assert sim.owners() == {item("a"): row(7, "u"), item("b"): row(1)}
    sim = reconfigure(sim, [entry("t")])  # u is no longer synced
    sim.sql("UPDATE t SET slot = 'a' WHERE id = 1")
    batch = sim.step()
    assert batch.rejected == [] and batch.plans[0].claims == {row(1): item("a")}
    assert sim.held() == {item("a"): "one"} and sim.owners() == {item("a"): row(1)}


def test_a_row_taking_an_item_its_row_leaves_in_the_same_transaction_overwrites_it_without_a_delete(
    tmp_path: Path,
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 2", "UPDATE t SET slot = 'b' WHERE id = 1")
    batch = sim.step()
    assert batch.puts() == {item("b"): row(1), item("c"): row(2)}
    assert batch.deletes() == {item("a")}  # no Delete of b: row 1's Put overwrites it
    assert batch.plans[0].overwritten == {item("b"): row(2)}
    assert sim.held() == {item("b"): "one", item("c"): "two"}
    assert sim.owners() == {item("b"): row(1), item("c"): row(2)} and sim.dead() == {}


def test_two_rows_swapping_items_overwrite_each_other_with_no_delete(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("UPDATE t SET slot = 'b' WHERE id = 1", "UPDATE t SET slot = 'a' WHERE id = 2")
    batch = sim.step()
    assert batch.deletes() == set() and batch.puts() == {item("a"): row(2), item("b"): row(1)}
    assert batch.plans[0].overwritten == {item("a"): row(1), item("b"): row(2)}
    assert sim.held() == {item("a"): "two", item("b"): "one"}
    assert sim.owners() == {item("a"): row(2), item("b"): row(1)} and sim.dead() == {}


def test_a_row_of_the_batch_is_judged_by_the_batch_not_by_its_row_as_it_is_later(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 2", "UPDATE t SET slot = 'b' WHERE id = 1")
    # Row 2 returns to slot b after the slice is read, before it is planned:
    # as the slice read it, row 2 left b, so row 1 takes it.
    batch = sim.plan(meanwhile=["UPDATE t SET slot = 'b' WHERE id = 2"])
    assert batch.rejected == [] and batch.plans[0].claims[row(1)] == item("b")
    sim.intend(batch)
    sim.commit(batch, sim.send(batch))
    sim.sync()  # row 2's return: b is row 1's now
    assert sim.held() == {item("b"): "one"} and sim.owners() == {item("b"): row(1)}
    assert sim.dead() == {row(2): (DeadLetterKind.COLLISION, item("b"))}


def refuse_put_of(ref: RowRef, it: str) -> Refuse:
    return lambda w: w.is_put and w.ref == ref and w.key_text == it


def test_a_refused_put_gives_the_item_it_was_to_overwrite_back_to_its_row_and_requeues_it(
    tmp_path: Path,
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1", "UPDATE t SET slot = 'a' WHERE id = 2")
    batch = sim.step(refuse=refuse_put_of(row(2), item("a")))
    assert batch.plans[0].overwritten == {item("a"): row(1)}
    # Row 1's old item at a was never overwritten: it is row 1's again, and row 1 is due again.
    assert sim.held() == {item("a"): "one", item("c"): "one"}
    assert sim.owners() == {item("a"): row(1), item("c"): row(1)}
    assert sim.queued() == [row(1)] and sim.dead() == {row(2): (DeadLetterKind.REFUSED, None)}
    sim.sync()
    assert sim.held() == {item("c"): "one"} and sim.owners() == {item("c"): row(1)}
    sim.sql("UPDATE t SET v = 'two, fixed' WHERE id = 2")
    sim.sync()
    assert sim.held() == {item("a"): "two, fixed", item("c"): "one"} and sim.dead() == {}
    assert sim.owners() == {item("a"): row(2), item("c"): row(1)}


# --- forget ----------------------------------------------------------------------


def test_a_gone_rows_item_is_deleted_and_forgotten_only_once_the_delete_is_acknowledged(
    tmp_path: Path,
) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("DELETE FROM t WHERE id = 1")
    batch = sim.plan()
    assert batch.deletes() == {item("a")} and batch.puts() == {}
    sim.intend(batch)
    sent = sim.send(batch)
    assert sim.held() == {item("b"): "two"}
    assert sim.owners() == {item("a"): row(1), item("b"): row(2)}  # acknowledged, not yet committed
    sim.commit(batch, sent)
    assert sim.owners() == {item("b"): row(2)}


def test_a_delete_not_delivered_leaves_the_item_recorded_until_one_is(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    sim.sql("DELETE FROM t WHERE id = 1")
    sim.step(refuse=lambda w: not w.is_put)
    assert sim.held() == {item("a"): "one"} and sim.owners() == {item("a"): row(1)}
    state.requeue_dead_letters(sim.conn)
    sim.sync()
    assert sim.held() == {} and sim.owners() == {} and sim.dead() == {}


def test_forget_target_drops_only_that_tables_records_in_that_target(tmp_path: Path) -> None:
    both = [entry("t"), entry("u")]
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')", "INSERT INTO u VALUES (7, 'b', 'seven')",
                   entries=both)
    with write_txn(sim.conn):
        owners.record(sim.conn, row(1), "elsewhere", item("z"))
        owners.forget_target(sim.conn, "t", TARGET)
    assert sim.owners() == {item("b"): row(7, "u")}
    assert sim.owners("elsewhere") == {item("z"): row(1)}


def test_record_makes_a_row_the_only_owner_of_one_item_and_forget_drops_it(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    with write_txn(sim.conn):
        owners.record(sim.conn, row(1), TARGET, item("b"))  # verify --repair: row 1's item is b now
    assert sim.owners() == {item("b"): row(1)}
    with write_txn(sim.conn):
        owners.forget(sim.conn, TARGET, item("b"))
    assert sim.owners() == {}


def test_recorded_owner_names_only_a_row_that_still_produces_the_item(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one')")
    assert owners.recorded_owner(sim.conn, TARGET, item("a"), sim.synced) == row(1)
    assert owners.recorded_owner(sim.conn, TARGET, item("a"), sim.synced, exclude={row(1)}) is None
    assert owners.recorded_owner(sim.conn, "elsewhere", item("a"), sim.synced) is None
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1")  # not synced yet: the record is stale
    assert owners.recorded_owner(sim.conn, TARGET, item("a"), sim.synced) is None


# --- freed items retry collisions --------------------------------------------------


def test_freeing_an_item_requeues_exactly_the_rows_refused_that_item(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two'), (3, 'x', 'three'), "
                   "(4, 'y', 'four'), (5, 'z', 'five')")
    sim.sql("UPDATE t SET slot = 'a' WHERE id = 3", "UPDATE t SET slot = 'b' WHERE id = 4")
    sim.sync()
    assert sim.dead() == {row(3): (DeadLetterKind.COLLISION, item("a")),
                          row(4): (DeadLetterKind.COLLISION, item("b"))}
    # A dead letter of another kind, whose reason names item a, is no collision over it.
    with write_txn(sim.conn):
        state.record_dead_letters(sim.conn, [Rejected(row(5), f"refused; item {item('a')}",
                                                       kind=DeadLetterKind.REFUSED)], None)
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1")  # frees a, not b
    sim.step()
    assert sim.queued() == [row(3)]
    sim.sync()
    assert sim.held() == {item("a"): "three", item("b"): "two", item("c"): "one", item("z"): "five"}
    assert set(sim.dead()) == {row(4), row(5)}


def test_requeue_collisions_retries_no_row_of_another_target(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'a', 'two')")
    assert sim.dead() == {row(2): (DeadLetterKind.COLLISION, item("a"))}
    with write_txn(sim.conn):
        owners.requeue_collisions(sim.conn, {("elsewhere", item("a")), (TARGET, item("b"))}, sim.synced.values())
    assert sim.queued() == []
    with write_txn(sim.conn):
        owners.requeue_collisions(sim.conn, {(TARGET, item("a"))}, sim.synced.values())
    assert sim.queued() == [row(2)]


# --- crash between the steps -------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """Rows synced, then changed in one transaction; what the crash leaves, and where they end."""

    rows: str
    change: Sequence[str]
    end: dict[str, str]  # slot -> the v of the item there, once replayed
    again: Sequence[str] = ()  # changed again while the process is down


CRASHES = {
    "move": Crash("(1, 'a', 'one')", ["UPDATE t SET slot = 'b' WHERE id = 1"], {"b": "one"}),
    "move, then again while down": Crash(
        "(1, 'a', 'one')", ["UPDATE t SET slot = 'b' WHERE id = 1"], {"c": "one"},
        ["UPDATE t SET slot = 'c' WHERE id = 1"]),
    "move, then gone while down": Crash(
        "(1, 'a', 'one')", ["UPDATE t SET slot = 'b' WHERE id = 1"], {}, ["DELETE FROM t"]),
    "take the item another row leaves": Crash(
        "(1, 'a', 'one'), (2, 'b', 'two')",
        ["UPDATE t SET slot = 'c' WHERE id = 2", "UPDATE t SET slot = 'b' WHERE id = 1"],
        {"b": "one", "c": "two"}),
    "swap, then one leaves while down": Crash(
        "(1, 'a', 'one'), (2, 'b', 'two')",
        ["UPDATE t SET slot = 'b' WHERE id = 1", "UPDATE t SET slot = 'a' WHERE id = 2"],
        {"a": "two", "d": "one"}, ["UPDATE t SET slot = 'd' WHERE id = 1"]),
    "collide": Crash(
        "(1, 'a', 'one'), (2, 'b', 'two')", ["UPDATE t SET slot = 'a' WHERE id = 2"], {"a": "one"}),
}


@pytest.mark.parametrize("sent", [False, True], ids=["before-the-send", "acknowledged-not-committed"])
@pytest.mark.parametrize("case", list(CRASHES))
def test_a_crash_between_the_steps_leaves_every_item_recorded_and_the_replay_deletes_them(
    tmp_path: Path, case: str, sent: bool
) -> None:
    crash = CRASHES[case]
    sim = make_sim(tmp_path, f"INSERT INTO t VALUES {crash.rows}")
    sim.sql(*crash.change)
    batch = sim.plan()
    sim.intend(batch)
    if sent:
        sim.send(batch)  # DynamoDB acknowledges; the process dies before the commit
    # The record is a superset of the items that exist.
    assert set(sim.held()) <= set(sim.owners())
    if crash.again:
        sim.sql(*crash.again)
    sim = sim.restart()
    replay = sim.plan()
    # Every item recorded for a row of the replay is put again (by it or the
    # row taking it over) or deleted: nothing that may exist is left out.
    replayed = {c.ref for c in replay.slice.changes["t"]}
    recorded = {it for it, ref in sim.owners().items() if ref in replayed}
    assert recorded - set(replay.puts()) <= replay.deletes()
    sim.intend(replay)
    sim.commit(replay, sim.send(replay))
    sim.sync()
    expected = {item(slot): v for slot, v in crash.end.items()}
    assert sim.held() == expected
    assert set(sim.owners()) == set(expected)


# --- what a batch plans for a gone row no record names ------------------------------


def shared(tmp_path: Path, *rows: str) -> Sim:
    """Tables a and b written to one target, keyed by id: rows of both can render one item."""
    sim = make_sim(tmp_path, *rows, entries=[entry("a", slotted=False), entry("b", slotted=False)])
    assert sim.synced["a"].tracked and sim.synced["b"].tracked
    return sim


def held_by_id(sim: Sim) -> dict[int, str]:
    return {int(i["id"]["N"]): i["v"]["S"] for i in sim.dynamo.items(TARGET).values()}


def test_a_gone_row_refused_an_item_never_deletes_the_item_another_row_holds(tmp_path: Path) -> None:
    sim = shared(tmp_path, "INSERT INTO a VALUES (1, NULL, 'mine')")
    sim.sql("INSERT INTO b VALUES (1, NULL, 'theirs')")
    sim.sync()
    assert sim.dead() == {row(1, "b"): (DeadLetterKind.COLLISION, key_text({"id": {"N": "1"}}))}
    sim.sql("DELETE FROM b WHERE id = 1")  # the refused row goes: it wrote nothing
    batch = sim.step()
    assert batch.deletes() == set()
    assert held_by_id(sim) == {1: "mine"} and sim.dead() == {}
    assert sim.owners() == {key_text({"id": {"N": "1"}}): row(1, "a")}


def test_a_row_come_and_gone_within_a_batch_deletes_no_item_the_batch_puts(tmp_path: Path) -> None:
    sim = shared(tmp_path)
    sim.sql("INSERT INTO a VALUES (1, NULL, 'mine')", "INSERT INTO b VALUES (1, NULL, 'theirs')",
            "DELETE FROM b WHERE id = 1")
    batch = sim.step()  # one write per DynamoDB key: a's Put alone
    assert batch.deletes() == set()
    assert held_by_id(sim) == {1: "mine"} and sim.dead() == {}


def test_rows_of_two_tables_come_and_gone_within_a_batch_delete_their_item_once(tmp_path: Path) -> None:
    sim = shared(tmp_path)
    sim.sql("INSERT INTO a VALUES (1, NULL, 'x')", "INSERT INTO b VALUES (1, NULL, 'y')",
            "DELETE FROM a", "DELETE FROM b")
    batch = sim.step()
    assert [w.key_text for w in batch.writes] == [key_text({"id": {"N": "1"}})]
    assert held_by_id(sim) == {} and sim.owners() == {}


# --- a refused Put, and the next slice planned meanwhile ----------------------------


def test_a_refused_put_the_next_slice_sends_again_keeps_its_item(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1", "UPDATE t SET slot = 'a', v = 'two, bad' WHERE id = 2")
    first = sim.plan()
    sim.intend(first)
    sent = sim.send(first, refuse=refuse_put_of(row(2), item("a")))
    sim.sql("UPDATE t SET v = 'two, fixed' WHERE id = 2")  # fixed while the first slice is in flight
    second = sim.plan()
    assert second.plans[0].kept == {row(2): item("a")}  # the record says row 2 holds a
    sim.intend(second)
    sim.commit(first, sent, later=second)
    sim.commit(second, sim.send(second))
    sim.sync()
    assert sim.held() == {item("a"): "two, fixed", item("c"): "one"}
    assert sim.owners() == {item("a"): row(2), item("c"): row(1)} and sim.dead() == {}


def test_a_refused_put_gives_back_no_item_the_next_slice_claims_for_another_row(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two'), (3, 'd', 'three')")
    sim.sql("UPDATE t SET slot = 'c' WHERE id = 1", "UPDATE t SET slot = 'a' WHERE id = 2")
    first = sim.plan()
    sim.intend(first)
    sent = sim.send(first, refuse=refuse_put_of(row(2), item("a")))
    # Meanwhile row 2 moves on and row 3 takes slot a, in one transaction.
    sim.sql("UPDATE t SET slot = 'e' WHERE id = 2", "UPDATE t SET slot = 'a' WHERE id = 3")
    second = sim.plan()
    assert second.plans[0].claims[row(3)] == item("a")
    sim.intend(second)
    sim.commit(first, sent, later=second)
    sim.commit(second, sim.send(second))
    sim.sync()
    assert sim.held() == {item("a"): "three", item("c"): "one", item("e"): "two"}
    assert sim.owners() == {item("a"): row(3), item("c"): row(1), item("e"): row(2)}

