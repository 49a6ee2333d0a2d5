"""A seeded chaos test that draws the environment, not only SQL: the config
(key templates, row filters, computed attributes, a write budget, several
tables, some sharing a target) and a sequence of events (application writes,
migrations that add or drop columns, a filter's column included, a reload with
a changed config, a restore from an older backup, another file renamed over the
database, throttling, odd replies, a crash between DynamoDB's acknowledgement
and the commit, rows over 400 KB under a drawn `oversize` policy, S3 out of
reach, a reload that changes the policy). The daemon's turns must never raise,
and at the end DynamoDB must equal SQLite with no ghost and no dead letter
(every drawn value fits its table's policy), every pointer's object must hold
what it should, and once `verify --repair` ran no object may be left that no
item points to.

A few seeds run in `scripts/test`; DYNASYNC_CHAOS_SEEDS=N runs N of them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeStore, FakeTarget

from dynasync import config, oversize, state, verify
from dynasync.app import App
from dynasync.exceptions import RetryableError
from dynasync.member import Member

SEEDS = int(os.environ.get("DYNASYNC_CHAOS_SEEDS", "3"))
COLUMNS = "id INTEGER PRIMARY KEY, v TEXT, k TEXT, flag INTEGER, extra TEXT"


class World:
    """One drawn deployment: a database, its config, DynamoDB (a fake) and the daemon's member."""

    def __init__(self, tmp: Path, rng: random.Random) -> None:
        self.tmp, self.rng, self.fake, self.store = tmp, rng, FakeTarget(), FakeStore()
        self.db = tmp / "app.db"
        self.tables = [f"t{n}" for n in range(rng.randint(1, 3))]
        with contextlib.closing(sqlite3.connect(self.db)) as c:
            c.execute("PRAGMA journal_mode=WAL")
            for t in self.tables:
                c.execute(f"CREATE TABLE {t} ({COLUMNS})")
            c.commit()
        self.entries = {t: self._entry(t) for t in self.tables}
        self.budget = rng.choice([None, 500.0])
        self.prefix = rng.choice(["dynasync/", "p/q/"])
        self.lost_records = False  # a restore or a new file: objects written since are recorded nowhere
        self.snapshot: Path | None = None
        self.member = self._member()

    def _entry(self, t: str) -> dict[str, Any]:
        rng = self.rng
        shared = rng.random() < 0.4
        entry: dict[str, Any] = {"source": t, "target": "shared" if shared else f"target-{t}"}
        if shared or rng.random() < 0.4:  # tables sharing a target tell their items apart
            entry["partition_key"] = {"name": "PK", "template": f"{t.upper()}#{{id}}"}
            entry["constants"] = {"type": t}
        if rng.random() < 0.5:
            entry["where"] = "flag IS NOT 0"
        if rng.random() < 0.4:
            entry["attributes"] = {"G": "K#{k}"}
        # Rows over 400 KB are written only to tables whose policy stores them.
        entry["oversize"] = rng.choice(["dead-letter", "compress", "s3", "s3"])
        if shared and "partition_key" not in entry:
            entry["partition_key"] = {"name": "PK", "template": f"{t.upper()}#{{id}}"}
        return entry

    def config(self) -> config.Config:
        """The config as the entries are now."""
        shared_keys = any(e["target"] == "shared" for e in self.entries.values())
        for e in self.entries.values():  # a shared target has one key schema
            if shared_keys and e["target"] == "shared":
                e.setdefault("partition_key", {"name": "PK", "template": f"{e['source'].upper()}#{{id}}"})
        data = {"source": {"database": str(self.db)},
                "dynamodb": {"create_tables": True, "max_retry_time": 2.0, "connect_timeout": 0.5,
                             "read_timeout": 0.5, **({"max_write_rate": self.budget} if self.budget else {})},
                "s3": {"bucket": "chaos-bucket", "prefix": self.prefix},
                "sync": {"backoff_initial": 0.01, "backoff_max": 0.02, "batch_size": self.rng.choice([3, 50])},
                "tables": list(self.entries.values())}
        return config.parse(data, self.tmp / "dynasync.toml")

    def _member(self) -> Member:
        cfg = self.config()
        app = App(cfg, lambda _cfg: self.fake, store_factory=lambda _cfg: self.store)
        return Member(self.db, cfg, app, lambda: None)

    def sql(self, *statements: str, params: Sequence[Any] = ()) -> None:
        c = sqlite3.connect(self.db, isolation_level=None, timeout=5)
        try:
            for s in statements:
                c.execute(s, params)
        finally:
            c.close()

    def turns(self, n: int) -> None:
        for _ in range(n):
            self.member.retry_at = 0.0  # no waiting out a backoff in a test
            self.member.turn()  # never raises: a failure is the member's state

    # --- events ---------------------------------------------------------------

    def writes(self) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 15)):
            t, i = rng.choice(self.tables), rng.randrange(25)
            flag = self._has(t, "flag")  # a migration may have dropped it
            cols, values = ("id, v, k, flag", "?, ?, ?, ?") if flag else ("id, v, k", "?, ?, ?")
            row = (i, f"v{rng.randrange(99)}", rng.choice(["a", "b", None]), rng.choice([0, 1, None]))
            op = rng.random()
            if op < 0.5:
                self.sql(f"INSERT OR REPLACE INTO {t} ({cols}) VALUES ({values})", params=row[: 4 if flag else 3])
            elif op < 0.8:
                self.sql(f"UPDATE {t} SET v = ? WHERE id = ?", params=(f"u{rng.randrange(9)}", i))
                if flag:
                    self.sql(f"UPDATE {t} SET flag = ? WHERE id = ?", params=(rng.choice([0, 1]), i))
            else:
                self.sql(f"DELETE FROM {t} WHERE id = ?", params=(i,))

    def big_rows(self) -> None:
        """Rows over 400 KB (text that compresses, or not), or shrunk back below it."""
        rng = self.rng
        storing = [t for t in self.tables if self.entries[t]["oversize"] != "dead-letter"]
        for _ in range(rng.randint(1, 3)) if storing else ():
            t, i = rng.choice(storing), rng.randrange(25)
            size = rng.choice([500_000, 1_200_000, 20])
            text = (f"{rng.randrange(10**6)} lorem ipsum dolor " * (size // 20 + 1))[:size]
            if self.entries[t]["oversize"] == "s3" and rng.random() < 0.3:
                text = os.urandom(size // 2).hex()  # does not compress: only S3 stores it
            self.sql(f"INSERT OR REPLACE INTO {t} (id, v, k) VALUES (?, ?, 'a')", params=(i, text))

    def s3_outage(self) -> None:
        """S3 out of reach for a few turns: the rows wait, and nothing fails but those turns."""
        self.store.down = True
        self.big_rows()
        self.turns(self.rng.randint(1, 3))
        self.store.down = False

    def change_policy(self) -> None:
        """A reload that moves a table storing big rows to the other way of storing them."""
        storing = [t for t in self.tables if self.entries[t]["oversize"] != "dead-letter"]
        if storing:
            t = self.rng.choice(storing)
            if self.entries[t]["oversize"] == "s3" and self._incompressible(t):
                return  # compress could not store those rows: they would be dead letters
            self.entries[t]["oversize"] = "s3" if self.entries[t]["oversize"] == "compress" else "compress"
            self.member.reconfigure(self.config())

    def _incompressible(self, t: str) -> bool:
        """Whether t holds a row only S3 can store (1.2 MB of hex: no space in it, unlike the text)."""
        with contextlib.closing(sqlite3.connect(self.db)) as c:
            return c.execute(f"SELECT 1 FROM {t} WHERE length(v) > 800000 AND instr(v, ' ') = 0").fetchone() is not None

    def add_column(self) -> None:
        t = self.rng.choice(self.tables)
        self.sql(f"ALTER TABLE {t} ADD COLUMN c{self.rng.randrange(10**6)} INTEGER DEFAULT 7")

    def drop_filter_column(self) -> None:
        """A migration drops the column a filter names; the operator then fixes the config and reloads."""
        filtered = [t for t, e in self.entries.items() if "where" in e and self._has(t, "flag")]
        if not filtered:
            return
        t = self.rng.choice(filtered)
        self.sql(f"ALTER TABLE {t} DROP COLUMN flag")
        self.turns(2)
        assert t in self.member.failed_tables, self.member.failed_tables
        del self.entries[t]["where"]
        self.member.reconfigure(self.config())

    def _has(self, t: str, column: str) -> bool:
        with contextlib.closing(sqlite3.connect(self.db)) as c:  # closed: a stale connection would pin the WAL
            return any(r[1] == column for r in c.execute(f"PRAGMA table_info({t})"))

    def snapshot_now(self) -> None:
        self.snapshot = self.tmp / f"snap{self.rng.randrange(10**6)}.db"
        c, s = sqlite3.connect(self.db), sqlite3.connect(self.snapshot)
        c.backup(s)
        s.close()  # closed, so the copy is whole in its one file
        c.close()

    def restore(self) -> None:
        if self.snapshot is None or not self.snapshot.exists():
            return
        self.member.close()  # dynasync stopped for the restore
        for side in ("-wal", "-shm"):
            Path(f"{self.db}{side}").unlink(missing_ok=True)
        shutil.move(self.snapshot, self.db)
        self.lost_records = True
        self.member = self._member()

    def replace_file(self) -> None:
        """The application rebuilds its database into a new file and renames it over the old one."""
        new = self.tmp / "rebuilt.db"
        new.unlink(missing_ok=True)
        c = sqlite3.connect(new, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"ATTACH DATABASE '{self.db}' AS old")
        for t in self.tables:
            c.execute(f"CREATE TABLE {t} AS SELECT * FROM old.{t} WHERE id % 3 != 0")
            cols = [r[1] for r in c.execute(f"PRAGMA old.table_info({t})")]
            c.execute(f"DROP TABLE {t}")
            c.execute(f"CREATE TABLE main.{t} ({', '.join(col + (' INTEGER PRIMARY KEY' if col == 'id' else '') for col in cols)})")
            c.execute(f"INSERT INTO main.{t} SELECT * FROM old.{t} WHERE id % 3 != 0")
        c.execute("DETACH DATABASE old")
        c.close()
        os.replace(new, self.db)
        self.lost_records = True

    def throttle(self) -> None:
        left = {"n": self.rng.randint(1, 6)}

        def fault(_: object) -> int:
            left["n"] -= 1
            if left["n"] >= 0:
                raise RetryableError(self.rng.choice(["ThrottlingException", "BadResponse"]), "odd", throttle=True)
            return 0

        self.fake.fault = fault
        self.turns(2)
        self.fake.fault = None

    def crash_after_ack(self) -> None:
        """DynamoDB acknowledged a slice, and the process died before it committed the mark."""
        original = state.commit_pass

        def die(*_: object, **__: object) -> None:
            raise KeyboardInterrupt("killed")

        state.commit_pass = die  # type: ignore[assignment]
        try:
            self.writes()
            with contextlib.suppress(KeyboardInterrupt):
                self.member._turn()
        finally:
            state.commit_pass = original
        self.member.app.close()  # the process is gone: its lock with it
        self.member = self._member()


EVENTS = ["writes", "writes", "writes", "add_column", "drop_filter_column", "snapshot_now", "restore",
          "replace_file", "throttle", "crash_after_ack", "big_rows", "big_rows", "s3_outage", "change_policy"]


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_daemon_converges_whatever_the_environment_does(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    world = World(tmp_path, rng)
    world.turns(2)
    for _ in range(rng.randint(8, 16)):
        getattr(world, rng.choice(EVENTS))()
        world.turns(rng.randint(0, 3))
    for _ in range(60):  # quiescence: everything applied, reconciled, copied
        world.turns(1)
        m = world.member
        owed = state.flagged_for_reconcile(m.app.conn, world.tables)
        if m.position.pending == 0 and not owed and m.health in ("healthy", "behind") and not m.failed_tables:
            break
    m = world.member
    assert m.health != "failing", m.error
    assert not m.failed_tables
    result = verify.verify(m.app)
    # Objects a restore or a new file left recorded nowhere are orphans until `verify --repair`.
    orphans = sum(t.orphans for t in result.tables)
    assert result.remaining == orphans and (orphans == 0 or world.lost_records), [
        e for t in result.tables for e in t.examples]
    assert state.dead_letters(m.app.conn) == []
    _no_orphan_once_repaired(world)
    m.close()


def _no_orphan_once_repaired(world: World) -> None:
    """Every object an item points to holds what the pointer says; once `verify
    --repair` ran long enough after the last write, no other object is left
    (a restore leaves objects nothing recorded: only the sweep finds those)."""
    pointed = set()
    for target in world.fake.tables:
        for item in world.fake.items(target).values():
            p = oversize.pointer(item)
            if p is not None:
                body, _ = world.store.objects[(p.bucket, p.key)]
                assert len(body) == p.size and hashlib.sha256(body).hexdigest() == p.sha256
                pointed.add(p.key)
    for key, (body, _) in list(world.store.objects.items()):
        world.store.objects[key] = (body, 0.0)  # written long ago: past any write still on its way
    world.member.app.lock()
    assert verify.verify(world.member.app, repair=True).in_sync
    assert world.store.keys() == pointed
