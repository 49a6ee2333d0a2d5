"""One `dynasync run` for a fleet of databases (`[source] databases`),
`{database}` in shared and per-tenant targets, files appearing and going away,
two daemons with overlapping globs, and a kill -9 in the middle of a fleet pass."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, _toml, unique
from test_cli import DYNASYNC, wait_until

from dynasync.lock import is_held

USERS = "CREATE TABLE users (id INTEGER PRIMARY KEY, v TEXT)"
SKIPPING = "skipping a database another dynasync instance or config syncs"


class Fleet:
    """A directory of tenant databases and a fleet config for them."""

    def __init__(self, env: Env, name: str = "fleet") -> None:
        self.env = env
        self.dir = env.dir / "tenants"
        self.dir.mkdir(exist_ok=True)
        self.staging = env.dir / "staging"
        self.staging.mkdir(exist_ok=True)
        self.config = env.dir / f"{name}.toml"
        self.log = env.dir / f"{name}.log"

    def write_config(self, pattern: str = "*.db", **table: Any) -> Path:
        lines = [f"[source]\ndatabases = {_toml(str(self.dir / pattern))}", "[dynamodb]",
                 f"endpoint_url = {_toml(self.env.endpoint)}", 'region = "us-east-1"', "create_tables = true",
                 "max_retry_time = 5.0", "[sync]", "interval = 0.5", "[[tables]]", 'source = "users"']
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        self.config.write_text("\n".join(lines) + "\n")
        return self.config

    def add(self, name: str, rows: int = 3) -> Path:
        """A tenant database, made aside and moved in whole, as a deploy would."""
        staged = self.staging / f"{name}.db"
        conn = sqlite3.connect(staged)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(USERS)
        conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"{name}-{i}") for i in range(rows)])
        conn.commit()
        conn.close()
        path = self.dir / f"{name}.db"
        os.rename(staged, path)
        return path

    def write(self, name: str, sql: str, params: Any = ()) -> None:
        conn = sqlite3.connect(self.dir / f"{name}.db", timeout=5)
        conn.execute(sql, params)
        conn.commit()
        conn.close()

    def rows(self, name: str) -> dict[int, str]:
        conn = sqlite3.connect(self.dir / f"{name}.db")
        try:
            return dict(conn.execute("SELECT id, v FROM users").fetchall())
        finally:
            conn.close()

    def cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DYNASYNC, *args, "--config", str(config or self.config)],
                              capture_output=True, text=True, timeout=180)

    def start(self, config: Path | None = None) -> subprocess.Popen[str]:
        """A daemon; it logs to self.log (a file, so a test can wait for a line while it runs)."""
        with self.log.open("w") as log:
            return subprocess.Popen([DYNASYNC, "run", "--config", str(config or self.config)],
                                    stdout=subprocess.PIPE, stderr=log, text=True)


def stop(fleet: Fleet, daemon: subprocess.Popen[str]) -> str:
    """SIGTERM: the daemon exits cleanly; its log."""
    daemon.send_signal(signal.SIGTERM)
    daemon.communicate(timeout=60)
    err = fleet.log.read_text()
    assert daemon.returncode == 0, err
    return err


def handles_sigterm(daemon: subprocess.Popen[str]) -> bool:
    """Whether the process has installed its own SIGTERM handler (Linux: SigCgt in /proc/PID/status)."""
    assert daemon.poll() is None, f"the daemon exited with {daemon.returncode}"
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@contextlib.contextmanager
def running(fleet: Fleet, config: Path | None = None) -> Iterator[list[str]]:
    """A daemon for the block; its log once it stopped cleanly (killed if the block failed)."""
    daemon = fleet.start(config)
    log: list[str] = []
    try:
        # Up once it handles SIGTERM (a SIGTERM before then kills it) and a database's
        # lock is held: its own, or, for a second daemon, the first one's.
        wait_until(lambda: handles_sigterm(daemon), timeout=30)
        wait_until(lambda: any(is_held(p) for p in fleet.dir.glob("*.db")), timeout=30)
        yield log
    except BaseException:
        daemon.kill()
        daemon.communicate(timeout=60)
        raise
    log.append(stop(fleet, daemon))


def scan(env: Env, target: str) -> list[dict[str, Any]]:
    """Every item of a table; none while the daemon has not created it yet."""
    out: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": target, "ConsistentRead": True}
    while True:
        try:
            page = env.client.scan(**kwargs)
        except env.client.exceptions.ResourceNotFoundException:
            return []
        out.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def shared_items(env: Env, target: str) -> dict[str, dict[int, str]]:
    """tenant -> {id: v}, from the shared table's PK = TENANT#{database}, SK = USER#{id}."""
    out: dict[str, dict[int, str]] = {}
    for item in scan(env, target):
        tenant = item["PK"]["S"].removeprefix("TENANT#")
        assert item["tenant"] == {"S": tenant}  # the constant names the database too
        out.setdefault(tenant, {})[int(item["id"]["N"])] = item["v"]["S"]
    return out


def shared_config(fleet: Fleet, pattern: str = "*.db") -> str:
    target = unique("shared")
    fleet.write_config(pattern, target=target,
                       partition_key={"name": "PK", "template": "TENANT#{database}"},
                       sort_key={"name": "SK", "template": "USER#{id}"}, constants={"tenant": "{database}"})
    return target


def test_a_fleet_of_twenty_with_files_appearing_and_going_away(env: Env) -> None:
    fleet = Fleet(env)
    target = shared_config(fleet)
    names = [f"t{i:02d}" for i in range(20)]
    for name in names:
        fleet.add(name)
    with running(fleet) as log:  # no init: the daemon sets each database up and copies it
        wait_until(lambda: set(shared_items(env, target)) == set(names), timeout=60)
        rng = random.Random(3)
        for i in range(60):
            name = rng.choice(names)
            op = rng.random()
            if op < 0.6:
                fleet.write(name, "INSERT OR REPLACE INTO users VALUES (?, ?)", (rng.randrange(10), f"w{i}"))
            else:
                fleet.write(name, "DELETE FROM users WHERE id = ?", (rng.randrange(10),))
        fleet.add("new1", rows=50)
        fleet.add("new2", rows=50)
        gone = names[:2]
        for name in gone:
            (fleet.dir / f"{name}.db").unlink()
        live = [n for n in names if n not in gone] + ["new1", "new2"]

        def equal() -> bool:
            got = shared_items(env, target)
            return all(got.get(n, {}) == fleet.rows(n) for n in live)

        wait_until(equal, timeout=60)
        status = json.loads(fleet.cli("status", "--json").stdout)
        assert status["databases"] == 20 and status["failing"] == 0, status
    err = log[0]
    assert err.count("a database went away") == 2 and err.count("a new database") == 22, err
    # The items of a database that went away stay in DynamoDB.
    assert all(n in shared_items(env, target) for n in gone)


def test_database_placeholder_in_per_tenant_targets_across_the_cli(env: Env) -> None:
    fleet = Fleet(env)
    prefix = unique("pt")
    fleet.write_config(target=f"{prefix}-{{database}}-users")
    for name in ("acme", "globex", "initech"):
        fleet.add(name, rows=5)
    assert fleet.cli("init").returncode == 0
    backfill = fleet.cli("backfill")
    assert backfill.returncode == 0 and backfill.stdout.count("5 row(s) copied") == 3, backfill.stdout
    for name in ("acme", "globex", "initech"):
        got = {int(i["id"]["N"]): i["v"]["S"] for i in scan(env, f"{prefix}-{name}-users")}
        assert got == fleet.rows(name)
    fleet.write("globex", "UPDATE users SET v = 'changed' WHERE id = 1")
    one = fleet.cli("sync", "--database", str(fleet.dir / "globex.db"))
    assert one.returncode == 0 and "1 change(s)" in one.stdout and "acme" not in one.stdout
    assert fleet.cli("verify").returncode == 0
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert status["databases"] == 3 and set(status["per_database"]) == {
        str(fleet.dir / f"{n}.db") for n in ("acme", "globex", "initech")}
    wrong = fleet.cli("sync", "--database", str(env.dir / "elsewhere.db"))
    assert wrong.returncode == 2 and "is not a database of this config" in wrong.stderr


def test_two_daemons_with_overlapping_globs_never_share_a_database(env: Env) -> None:
    first, second = Fleet(env, "first"), Fleet(env, "second")
    target = shared_config(first, "*.db")
    second.write_config("a*.db", **_table_options(first.config))
    for name in ("a1", "a2", "b1"):
        first.add(name)
    with running(first) as log_one:
        wait_until(lambda: set(shared_items(env, target)) == {"a1", "a2", "b1"}, timeout=60)
        with running(second, second.config) as log_two:
            # At least 2 s, and until the second daemon has met both of its databases.
            time.sleep(2.0)
            wait_until(lambda: second.log.read_text().count(SKIPPING) >= 2, timeout=30)
            first.write("a1", "INSERT INTO users VALUES (100, 'while both run')")
            wait_until(lambda: shared_items(env, target)["a1"].get(100) == "while both run", timeout=30)
    err_one, err_two = log_one[0], log_two[0]
    assert err_two.count(SKIPPING) == 2, err_two
    assert "skipping" not in err_one


def _table_options(config: Path) -> dict[str, Any]:
    """The [[tables]] keys of a fleet config written by Fleet.write_config, to share them."""
    import tomllib

    table = dict(tomllib.loads(config.read_text())["tables"][0])
    table.pop("source")
    return table


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_in_the_middle_of_a_fleet_pass(env: Env, seed: int) -> None:
    fleet = Fleet(env)
    target = shared_config(fleet)
    names = [f"k{i}" for i in range(6)]
    for name in names:
        fleet.add(name, rows=0)
    rng = random.Random(seed)
    for _ in range(3):
        daemon = fleet.start()
        for i in range(150):
            name = rng.choice(names)
            fleet.write(name, "INSERT OR REPLACE INTO users VALUES (?, ?)", (rng.randrange(40), f"v{i}"))
            if rng.random() < 0.2:
                fleet.write(name, "DELETE FROM users WHERE id = ?", (rng.randrange(40),))
        time.sleep(rng.uniform(0.05, 0.6))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    with running(fleet):
        wait_until(lambda: all(shared_items(env, target).get(n, {}) == fleet.rows(n) for n in names), timeout=60)
    check = fleet.cli("verify")
    assert check.returncode == 0, check.stdout + check.stderr


def test_only_a_write_makes_a_database_ready_not_its_own_turn(tmp_path: Path) -> None:
    """A turn opens and closes the database: the events that causes (opened,
    closed, attrib, the -wal created and deleted) must not make it ready
    again, or an idle fleet turns every database over and over at 100% CPU."""
    from types import SimpleNamespace

    from watchdog import events

    from dynasync.daemon import Daemon
    from dynasync.watch import FileEvents

    db = str(tmp_path / "t.db")
    source = SimpleNamespace(ready=False)
    unset = SimpleNamespace(set=lambda: None)
    daemon: Any = SimpleNamespace(by_file={db: source}, wake=unset, file_changed=unset,
                                  rescan=unset, matches=lambda p: p.endswith(".db"))
    handler = FileEvents(lambda kind, path: Daemon.file_event(daemon, kind, path))
    for event in (events.FileOpenedEvent(db), events.FileCreatedEvent(db + "-wal"),
                  events.FileOpenedEvent(db + "-wal"), events.FileClosedEvent(db + "-wal"),
                  events.FileDeletedEvent(db + "-wal"), events.FileClosedEvent(db),
                  events.FileClosedNoWriteEvent(db), events.FileSystemEvent(db + "-shm")):
        handler.on_any_event(event)
    assert not source.ready
    handler.on_any_event(events.FileModifiedEvent(db + "-wal"))
    assert source.ready


def with_notes(fleet: Fleet, *names: str) -> None:
    """Tenants whose databases also have a notes table, not synced yet, with one note each."""
    for name in names:
        fleet.add(name)
        fleet.write(name, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        fleet.write(name, "INSERT INTO notes VALUES (1, ?)", (f"{name} note",))


def test_sighup_reloads_the_whole_fleet_and_new_files_follow_the_new_config(env: Env) -> None:
    fleet = Fleet(env)
    target = shared_config(fleet)
    notes = unique("notes")
    with_notes(fleet, "r1", "r2")
    old = fleet.config.read_text()
    with running(fleet) as log:
        wait_until(lambda: set(shared_items(env, target)) == {"r1", "r2"}, timeout=60)
        fleet.config.write_text(old + f'[[tables]]\nsource = "notes"\ntarget = "{notes}-{{database}}"\n')
        os.kill(_daemon_pid(fleet), signal.SIGHUP)

        def notes_of(name: str) -> dict[int, str]:
            return {int(i["id"]["N"]): i["body"]["S"] for i in scan(env, f"{notes}-{name}")}

        # Each database's notes are copied into its own table and then kept in sync.
        wait_until(lambda: all(notes_of(n) == {1: f"{n} note"} for n in ("r1", "r2")), timeout=60)
        fleet.write("r2", "INSERT INTO notes VALUES (2, 'after the reload')")
        wait_until(lambda: notes_of("r2").get(2) == "after the reload", timeout=30)
        # A database that appears after the reload gets the reloaded config.
        fleet.add("r3")
        fleet.write("r3", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        fleet.write("r3", "INSERT INTO notes VALUES (7, 'late tenant')")
        wait_until(lambda: notes_of("r3") == {7: "late tenant"}, timeout=60)
        # An invalid config is refused for the whole fleet; the old one keeps syncing.
        good = fleet.config.read_text()
        fleet.config.write_text(good.replace('source = "notes"', 'source = "notes"\ncolumns = ["nope"]'))
        os.kill(_daemon_pid(fleet), signal.SIGHUP)
        # Refused before the good config is back (on a busy machine a reload can take over a second).
        wait_until(lambda: "reload refused" in fleet.log.read_text(), timeout=30)
        fleet.write("r1", "INSERT INTO notes VALUES (3, 'still syncing')")
        wait_until(lambda: notes_of("r1").get(3) == "still syncing", timeout=30)
        fleet.config.write_text(good)
    err = log[0]
    assert err.count("reloaded the config") == 1 and "reload refused" in err and "nope" in err, err


def _daemon_pid(fleet: Fleet) -> int:
    """The pid of the `dynasync run` on this fleet's config."""
    out = subprocess.run(["pgrep", "-f", f"dynasync run --config {fleet.config}"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 1, out
    return pids[0]


def test_a_database_busy_at_a_reload_takes_the_new_config_once_it_is_free(env: Env) -> None:
    from dynasync.lock import InstanceLock

    fleet = Fleet(env)
    target = shared_config(fleet)
    notes = unique("notes")
    with_notes(fleet, "f1", "f2")
    busy = InstanceLock(fleet.dir / "f2.db")
    busy.acquire(park=False)  # another process syncs f2 for now
    try:
        with running(fleet) as log:
            wait_until(lambda: set(shared_items(env, target)) == {"f1"}, timeout=60)
            fleet.config.write_text(fleet.config.read_text()
                                    + f'[[tables]]\nsource = "notes"\ntarget = "{notes}-{{database}}"\n')
            os.kill(_daemon_pid(fleet), signal.SIGHUP)
            wait_until(lambda: len(scan(env, f"{notes}-f1")) == 1, timeout=60)
            busy.release()
            wait_until(lambda: [i["body"]["S"] for i in scan(env, f"{notes}-f2")] == ["f2 note"], timeout=60)
            assert set(shared_items(env, target)) == {"f1", "f2"}
    finally:
        busy.release()
    assert "it will on a later turn" in log[0] and "a database took the reloaded config" in log[0], log[0]


def test_a_database_another_config_syncs_stays_refused_turn_after_turn(env: Env) -> None:
    """The fleet keeps each database's App between turns: an owner refused once
    must be refused again, not let through because the lock was kept."""
    from dynasync import capture, config
    from dynasync.app import App
    from dynasync.exceptions import OwnerError

    env.table("users", USERS)
    env.run(capture.init)  # owned by env's config
    other = env.dir / "other.toml"
    other.write_text(env.config_path.read_text())
    app = App(config.load(other))
    try:
        for _ in range(2):
            with pytest.raises(OwnerError):
                app.lock()
            app.disconnect()
    finally:
        app.close()
