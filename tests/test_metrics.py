"""Prometheus metrics served by `dynasync run`."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.request

from conftest import Env
from ddblocal import free_port
from faultproxy import FaultProxy
from test_cli import DYNASYNC, cli, wait_until


def scrape(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}  # not listening yet
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(dynasync_[^ ]+) (\S+)$", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def test_metrics_follow_the_daemon(env: Env, ddb_local: object) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    cli(env, "init", check=True)
    proxy = FaultProxy(ddb_local.port, seed=1, throttle=0.5)  # type: ignore[attr-defined]
    port = free_port()
    env.write_config(endpoint=proxy.endpoint, sync={"interval": 0.2})
    env.config_path.write_text(env.config_path.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # One transaction, so every pass sees the same outcome: 1 put, 1 delete, 1 dead letter.
        conn = env.app_conn()
        conn.executescript("BEGIN; INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 1e308); "
                           "DELETE FROM t WHERE id = 2; COMMIT;")
        conn.close()
        put = 'dynasync_changes_applied_total{operation="put",table="t"}'
        delete = 'dynasync_changes_applied_total{operation="delete",table="t"}'

        def settled() -> bool:
            # Counters move when a pass ends, gauges right after: wait for both.
            m = scrape(port)
            return m.get(put) == 1.0 and m.get(delete) == 1.0 and m.get("dynasync_dead_letters") == 1.0

        wait_until(settled)
        m = scrape(port)
        assert m["dynasync_pending_changes"] == 0 and m["dynasync_lag_seconds"] == 0
        assert m["dynasync_last_successful_pass_timestamp_seconds"] > 0
        assert m["dynasync_pass_duration_seconds_count"] >= 1
        assert sum(v for k, v in m.items() if k.startswith("dynasync_dynamodb_throttles_total")) > 0
        # An outage: pending and lag grow, failures are counted.
        proxy.down = True
        env.sql("INSERT INTO t VALUES (4, 'stuck')")
        wait_until(lambda: scrape(port).get("dynasync_pending_changes") == 1
                   and scrape(port)["dynasync_lag_seconds"] > 0.5)
        assert scrape(port)["dynasync_pass_failures_total"] >= 1
        proxy.down = False
        wait_until(lambda: scrape(port)["dynasync_pending_changes"] == 0, timeout=30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        proxy.close()
    assert daemon.returncode == 0
