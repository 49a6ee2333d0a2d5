"""The seeded chaos test of tests/test_environment_chaos.py, against the real
`dynasync run` and DynamoDB Local: a drawn config (one database or a small fleet
with `{database}` in its targets, key templates, filters, computed attributes, a
`[dynamodb] max_write_rate`) and drawn events (application writes, a migration
adding a column, SIGHUP with a changed config, kill -9 then a restart, DynamoDB
Local restarted on its port, which loses every table). The daemon must never
exit on its own; at the end it converges, stops on SIGTERM with 0, and DynamoDB
equals SQLite with no ghost and no dead letter.

Two seeds run by default; DYNASYNC_CHAOS_SEEDS=N runs N of them."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import Env, _toml, unique
from ddblocal import DynamoDBLocal
from equality import assert_in_sync, dynamo_side
from test_cli import DYNASYNC, wait_until

SEEDS = int(os.environ.get("DYNASYNC_CHAOS_SEEDS", "2"))
COLUMNS = "id INTEGER PRIMARY KEY, v TEXT, k TEXT, flag INTEGER"
FILTERS = [None, "flag IS NOT 0", "flag = 1", "v LIKE 'u%'"]


def handles(daemon: subprocess.Popen[str], sig: int) -> bool:
    """Whether the daemon has installed its own handler for sig (a signal before then kills it)."""
    assert daemon.poll() is None, f"the daemon exited on its own with {daemon.returncode}"
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


class World:
    """One drawn deployment: its databases, its config, DynamoDB Local and the daemon."""

    def __init__(self, env: Env, server: DynamoDBLocal, rng: random.Random) -> None:
        self.env, self.server, self.rng = env, server, rng
        self.fleet = rng.random() < 0.5
        self.dir = env.dir / "tenants"
        self.dir.mkdir()
        names = [f"a{n}" for n in range(rng.randint(2, 3))] if self.fleet else ["app"]
        self.dbs = [self.dir / f"{name}.db" for name in names]
        self.tables = [f"t{n}" for n in range(rng.randint(1, 2))]
        for db in self.dbs:
            with contextlib.closing(sqlite3.connect(db)) as c:
                c.execute("PRAGMA journal_mode=WAL")
                for t in self.tables:
                    c.execute(f"CREATE TABLE {t} ({COLUMNS})")
                c.commit()
        self.entries = {t: self._entry(t) for t in self.tables}
        self.budget = rng.choice([None, 300.0])
        self.log = env.dir / "daemon.log"
        self.write_config()
        self.daemon = self.start()

    def _entry(self, t: str) -> dict[str, Any]:
        rng = self.rng
        target = unique(t) + ("-{database}" if self.fleet else "")
        entry: dict[str, Any] = {"source": t, "target": target}
        if rng.random() < 0.5:
            entry["partition_key"] = {"name": "PK", "template": f"{t.upper()}#{{id}}"}
        if (where := rng.choice(FILTERS)) is not None:
            entry["where"] = where
        if rng.random() < 0.4:
            entry["attributes"] = {"G": "K#{k}"}
        return entry

    def write_config(self) -> None:
        """The config file as the entries are now."""
        source = (f"databases = {_toml(str(self.dir / '*.db'))}" if self.fleet
                  else f"database = {_toml(str(self.dbs[0]))}")
        lines = ["[source]", source, "[dynamodb]", f"endpoint_url = {_toml(self.env.endpoint)}",
                 'region = "us-east-1"', "create_tables = true", "max_retry_time = 3.0"]
        if self.budget:
            lines.append(f"max_write_rate = {_toml(self.budget)}")
        lines += ["[sync]", "interval = 0.3", "backoff_initial = 0.1", "backoff_max = 1.0"]
        for e in self.entries.values():
            lines.append("[[tables]]")
            lines += [f"{k} = {_toml(v)}" for k, v in e.items()]
        self.env.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> subprocess.Popen[str]:
        """A daemon, up once it handles SIGHUP and SIGTERM."""
        with self.log.open("a") as log:
            daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(self.env.config_path)],
                                      stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            wait_until(lambda: handles(daemon, signal.SIGHUP) and handles(daemon, signal.SIGTERM), timeout=30)
        except BaseException:
            daemon.kill()
            daemon.wait(timeout=30)
            raise
        return daemon

    def alive(self) -> None:
        """The daemon never exits on its own."""
        assert self.daemon.poll() is None, (f"the daemon exited on its own with {self.daemon.returncode}: "
                                            + self.log.read_text()[-3000:])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DYNASYNC, *args, "--config", str(self.env.config_path)],
                              capture_output=True, text=True, timeout=120)

    # --- events ---------------------------------------------------------------

    def writes(self) -> None:
        rng = self.rng
        for _ in range(rng.randint(5, 30)):
            db, t, i = rng.choice(self.dbs), rng.choice(self.tables), rng.randrange(30)
            op = rng.random()
            with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=5)) as c:
                if op < 0.5:
                    c.execute(f"INSERT OR REPLACE INTO {t} (id, v, k, flag) VALUES (?, ?, ?, ?)",
                              (i, f"{rng.choice('uv')}{rng.randrange(99)}", rng.choice(["a", "b", None]),
                               rng.choice([0, 1, None])))
                elif op < 0.8:
                    c.execute(f"UPDATE {t} SET v = ?, flag = ? WHERE id = ?",
                              (f"{rng.choice('uv')}{rng.randrange(9)}", rng.choice([0, 1]), i))
                else:
                    c.execute(f"DELETE FROM {t} WHERE id = ?", (i,))

    def add_column(self) -> None:
        db, t = self.rng.choice(self.dbs), self.rng.choice(self.tables)
        with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=5)) as c:
            c.execute(f"ALTER TABLE {t} ADD COLUMN c{self.rng.randrange(10**6)} INTEGER DEFAULT 7")

    def reload(self) -> None:
        """The operator changes a mapping (a computed attribute, a filter) and sends SIGHUP."""
        e = self.entries[self.rng.choice(self.tables)]
        if self.rng.random() < 0.5:
            if e.pop("attributes", None) is None:
                e["attributes"] = {"G": "K#{k}"}
        else:
            e.pop("where", None)
            if (where := self.rng.choice(FILTERS)) is not None:
                e["where"] = where
        self.write_config()
        self.daemon.send_signal(signal.SIGHUP)

    def kill_9(self) -> None:
        """kill -9, application writes while it is down, then a restart."""
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(timeout=30)
        self.writes()
        self.daemon = self.start()

    def dynamodb_restart(self) -> None:
        """DynamoDB Local stopped and started again on its port: in memory, it lost every table.

        The application then writes a row every filter keeps to every table: the
        daemon describes its targets only when it starts, so while it runs it learns
        that a target is gone from a write to it. A table nobody writes to stays
        empty in DynamoDB with `status` saying all is well until the next restart
        (a known gap, left out of the draw)."""
        self.server.restart()
        for db in self.dbs:
            with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=5)) as c:
                for t in self.tables:
                    c.execute(f"INSERT OR REPLACE INTO {t} (id, v, k, flag) VALUES (?, 'u0', 'a', 1)",
                              (self.rng.randrange(30),))

    # --- the end ----------------------------------------------------------------

    def statuses(self) -> list[dict[str, Any]]:
        out = json.loads(self.cli("status", "--json").stdout)
        return list(out["per_database"].values()) if self.fleet else [out]

    def converged(self) -> bool:
        self.alive()
        return all(s["pending_changes"] == 0 and not s["failing"] and not s["missing_targets"]
                   and all(t["reconcile"] is None and t["set_aside"] is None for t in s["tables"].values())
                   for s in self.statuses())

    def target(self, db: Path, t: str) -> str:
        return str(self.entries[t]["target"]).replace("{database}", db.stem)

    def assert_keys_match(self, db: Path, t: str) -> None:
        """An independent ghost check: one item per row the filter keeps, keyed as the template says."""
        e = self.entries[t]
        with contextlib.closing(sqlite3.connect(db)) as c:
            ids = [i for (i,) in c.execute(f"SELECT id FROM {t} WHERE {e.get('where') or 'true'}")]
        if "partition_key" in e:
            want = {(("S", f"{t.upper()}#{i}"),) for i in ids}
            have = set(dynamo_side(self.env.client, self.target(db, t), ["PK"]))
        else:
            want = {(("N", i),) for i in ids}
            have = {(("N", int(k[0][1])),) for k in dynamo_side(self.env.client, self.target(db, t), ["id"])}
        assert have == want, f"{db.name}/{t}: missing {sorted(want - have)[:5]}, extra {sorted(have - want)[:5]}"

    def assert_in_sync(self) -> None:
        check = self.cli("verify")
        assert check.returncode == 0, check.stdout + check.stderr
        for db in self.dbs:
            for t, e in self.entries.items():
                self.assert_keys_match(db, t)
                if not ({"partition_key", "where", "attributes"} & set(e)):  # items are the rows as they are
                    assert_in_sync(SimpleNamespace(db_path=db, client=self.env.client,
                                                   tables={t: self.target(db, t)}), t)
        assert all(s["dead_letters"] == 0 for s in self.statuses())


EVENTS = ["writes", "writes", "writes", "add_column", "reload", "kill_9", "dynamodb_restart"]


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_real_daemon_converges_whatever_the_environment_does(env: Env, ddb_local: DynamoDBLocal,
                                                                 seed: int) -> None:
    rng = random.Random(seed)
    world = World(env, ddb_local, rng)
    try:
        for _ in range(rng.randint(4, 8)):
            getattr(world, rng.choice(EVENTS))()
            time.sleep(rng.uniform(0.1, 0.8))
            world.alive()
        wait_until(world.converged, timeout=60)
        world.daemon.send_signal(signal.SIGTERM)
        world.daemon.wait(timeout=60)
        assert world.daemon.returncode == 0, world.log.read_text()[-3000:]
    finally:
        if world.daemon.poll() is None:
            world.daemon.kill()
            world.daemon.wait(timeout=30)
    world.assert_in_sync()
