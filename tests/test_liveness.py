"""The daemon stays visibly alive to systemd whatever it waits for: READY as soon
as SQLite and DynamoDB answer, and the watchdog pinged through every wait (a write
budget, retries, delivery), so a slow budget never gets a working daemon killed."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from conftest import Env
from test_cli import DYNASYNC, cli, wait_until


def test_a_slow_write_budget_never_starves_the_watchdog(env: Env, tmp_path: Path) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.write_config(dynamodb={"max_write_rate": 25.0})
    cli(env, "init", check=True)
    c = env.app_conn()
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(150)])  # 6 s of budget
    c.close()
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    heard: list[tuple[float, str]] = []
    done = threading.Event()

    def listen() -> None:  # as systemd does: every message read as it comes
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                heard.append((time.monotonic(), sock.recv(4096).decode()))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    started = time.monotonic()
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              env={**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: json.loads(cli(env, "status", "--json").stdout)["pending_changes"] == 0, timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
        done.set()
        listener.join()
        sock.close()
    ready_at = next((t for t, m in heard if "READY=1" in m), None)
    pings = [t for t, m in heard if "WATCHDOG=1" in m]
    drained = time.monotonic()
    assert daemon.returncode == 0, err
    assert len(env.items("t")) == 150  # the budget drained the backlog...
    assert ready_at is not None and ready_at - started < drained - started - 3, (ready_at, drained)  # ...after READY
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert pings and max(gaps) < 2.0, gaps  # never a watchdog timeout meanwhile
