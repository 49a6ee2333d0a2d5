"""Rows over 400 KB under the real daemon, against DynamoDB Local and moto's S3
server: kill -9 at random moments while the application writes large rows,
and S3 out of reach for a while. Whatever happens, once it converges every
item decodes to its row, every pointer's object is there as the pointer says,
and no object is left that no item points to."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from decimal import Decimal
from typing import Any

from conftest import Env, S3Bucket
from s3local import S3Local
from test_cli import DYNASYNC, cli, wait_until

import dynasync
from dynasync import oversize

KB = 1024
MB = 1024 * KB
DOCS = "CREATE TABLE {} (id INTEGER PRIMARY KEY, title TEXT, body TEXT, data BLOB)"


def _text(n: int, seed: int) -> str:
    """Text of n characters that zlib compresses about 5x, like documents do."""
    words = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:6] + " " for i in range(40)]
    return "".join(words[(i * 7 + i // 13) % len(words)] for i in range(n // 7 + 1))[:n]


class LargeChurn(threading.Thread):
    """An application writer of rows that cross 400 KB both ways: 1 MB of
    compressible text, incompressible blobs (the s3 table only: compression
    cannot fit them), small rows, and deletes."""

    def __init__(self, env: Env, keys: int = 12, pause: float = 0.03) -> None:
        super().__init__(daemon=True)
        self.env, self.keys, self.pause = env, keys, pause
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.commits = 0
        self.texts = [_text(MB, seed) for seed in range(3)] + [_text(300 * KB, 9)]

    def _row(self, rnd: random.Random, table: str) -> tuple[str | None, bytes | None]:
        salt = f"{rnd.random()} "  # a new body each time: a new object
        kind = rnd.random()
        if kind < 0.45:
            return salt + rnd.choice(self.texts), None
        if kind < 0.6 and table == "docs":
            return salt, os.urandom(rnd.choice((450 * KB, 700 * KB)))
        return salt + "small", None

    def run(self) -> None:
        rnd = random.Random(18)
        conn = sqlite3.connect(self.env.db_path, isolation_level=None, timeout=5.0)
        while not self.stop.is_set():
            try:
                conn.execute("BEGIN")
                for _ in range(rnd.randint(1, 3)):
                    table, k = rnd.choice(("docs", "notes")), rnd.randrange(self.keys)
                    if rnd.random() < 0.8:
                        body, data = self._row(rnd, table)
                        conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, 't', ?, ?)", (k, body, data))
                    else:
                        conn.execute(f"DELETE FROM {table} WHERE id = ?", (k,))
                conn.execute("COMMIT")
                self.commits += 1
            except sqlite3.OperationalError as e:
                self.errors.append(str(e))
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            time.sleep(self.pause)
        conn.close()


def _setup(env: Env, s3: S3Bucket, **dynamodb: Any) -> None:
    env.table("docs", DOCS.format("docs"))
    env.table("notes", DOCS.format("notes"))
    env.table("small", "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT)")
    env.options["docs"] = {"oversize": "s3"}
    env.options["notes"] = {"oversize": "compress"}
    env.write_config(sync={"interval": 0.3, "batch_size": 20}, dynamodb=dynamodb,
                     s3={"bucket": s3.bucket, "prefix": "blobs/", "endpoint_url": s3.endpoint})
    cli(env, "init", check=True)


def _daemon(env: Env) -> subprocess.Popen[bytes]:
    return subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _norm(av: dict[str, Any]) -> tuple[str, Any]:
    ((kind, v),) = av.items()
    if kind == "N":
        return "N", Decimal(v).normalize()
    return kind, bytes(v) if kind == "B" else v


def _rows(env: Env, table: str) -> dict[int, dict[str, tuple[str, Any]]]:
    """Each row as it maps to an item (NULL columns have no attribute)."""
    out = {}
    for id_, *rest in env.rows(f"SELECT id, title, body, data FROM {table}"):
        row = {"id": ("N", Decimal(id_).normalize())}
        for name, v in zip(("title", "body", "data"), rest, strict=True):
            if v is not None:
                row[name] = ("B", bytes(v)) if isinstance(v, bytes) else ("S", v)
        out[id_] = row
    return out


def _assert_converged(env: Env, s3: S3Bucket) -> None:
    """DynamoDB holds every row and nothing else (read through the stored forms),
    every pointer's object is in S3 as the pointer says, the bucket holds
    nothing else, and no object is still waiting to be looked at."""
    pointed: set[str] = set()
    for table in ("docs", "notes"):
        items = env.items(table)
        for it in items:
            p = oversize.pointer(it)
            if p is not None:
                assert p.bucket == s3.bucket
                body = s3.body(p.bucket, p.key)  # a dangling pointer fails here
                assert (len(body), hashlib.sha256(body).hexdigest()) == (p.size, p.sha256), p.key
                pointed.add(p.key)
        decoded = {int(d["id"]["N"]): {k: _norm(v) for k, v in d.items()}
                   for d in (dynasync.decode_item(it, fetch=s3.body) for it in items)}
        assert decoded == _rows(env, table), f"{table}: DynamoDB differs from SQLite"
    assert s3.keys() == pointed, "orphan objects left in the bucket"
    assert env.rows("SELECT target, item, object FROM _dynasync_objects WHERE dirty") == []


def test_kill_9_loop_with_large_rows_leaves_no_orphan_and_no_dangling_pointer(env: Env, s3: S3Bucket) -> None:
    _setup(env, s3)
    rnd = random.Random(9)
    churn = LargeChurn(env)
    churn.start()
    try:
        for _ in range(6):
            p = _daemon(env)
            time.sleep(rnd.uniform(0.8, 2.5))
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    finally:
        churn.stop.set()
        churn.join()
    assert churn.commits > 20 and churn.errors == []
    assert env.rows("SELECT count(*) FROM _dynasync_objects")[0][0] > 0  # the daemon got to S3
    cli(env, "sync", check=True)
    repaired = cli(env, "verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    _assert_converged(env, s3)
    assert cli(env, "verify").returncode == 0
    assert json.loads(cli(env, "status", "--json").stdout)["dead_letters"] == 0


def _status(env: Env) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(cli(env, "status", "--json").stdout)
    return got


def test_s3_out_of_reach_holds_the_rows_back_and_the_daemon_stays_up(
    env: Env, s3: S3Bucket, s3_local: S3Local
) -> None:
    _setup(env, s3, connect_timeout=1.0, read_timeout=2.0, max_retry_time=2.0)
    env.write_config(sync={"interval": 0.2, "backoff_initial": 0.2, "backoff_max": 1.0})
    env.sql("INSERT INTO docs VALUES (1, 't', ?, NULL)", params=(_text(MB, 1),))
    daemon = _daemon(env)
    try:
        wait_until(lambda: len(s3.keys()) == 1, timeout=30)
        s3_local.pause()
        try:
            conn = env.app_conn()
            conn.execute("UPDATE docs SET body = ? WHERE id = 1", (_text(MB, 2),))
            conn.execute("INSERT INTO docs VALUES (2, 't', ?, NULL)", (_text(MB, 3),))
            conn.execute("INSERT INTO notes VALUES (1, 't', ?, NULL)", (_text(MB, 4),))
            conn.execute("INSERT INTO small VALUES (1, 'small')")
            conn.close()
            wait_until(lambda: _status(env)["failing"] is not None, timeout=30)
            env.sql("INSERT INTO small VALUES (2, 'written while S3 is down')")
            time.sleep(3)  # a few failed turns, backing off
            status = _status(env)
            assert daemon.poll() is None, "the daemon exited while S3 was out of reach"
            assert status["running"] and status["failing"] is not None and status["pending_changes"] > 0
            assert status["pending_changes"] >= 5  # nothing is acknowledged past the large rows
        finally:
            s3_local.resume()
        wait_until(lambda: _status(env)["pending_changes"] == 0 and _status(env)["failing"] is None, timeout=40)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert daemon.returncode == 0
    assert sorted(int(it["id"]["N"]) for it in env.items("small")) == [1, 2]
    cli(env, "sync", check=True)
    _assert_converged(env, s3)
    assert cli(env, "verify").returncode == 0
