"""Throttling, 500s, dropped connections, partial batches, latency and outages,
injected between dynasync and DynamoDB Local. Everything must converge."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import Env
from equality import assert_in_sync
from faultproxy import FaultProxy
from test_cli import DYNASYNC, cli, wait_until

from dynasync import backfill, capture, syncpass, verify


@pytest.fixture
def proxy(ddb_local: object) -> Iterator[FaultProxy]:
    p = FaultProxy(ddb_local.port, seed=7)  # type: ignore[attr-defined]
    yield p
    p.close()


def churn(env: Env, n: int = 400) -> None:
    conn = env.app_conn()
    conn.execute("BEGIN")
    for i in range(n):
        conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i, f"v{i}"))
    for i in range(0, n, 3):
        conn.execute("UPDATE t SET v = v || '!' WHERE id = ?", (i,))
    for i in range(0, n, 5):
        conn.execute("DELETE FROM t WHERE id = ?", (i,))
    conn.execute("COMMIT")
    conn.close()


def setup(env: Env, proxy: FaultProxy) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.run(capture.init)  # tables created directly, without faults
    env.write_config(endpoint=proxy.endpoint, dynamodb={"max_retry_time": 60.0, "max_concurrency": 4})


@pytest.mark.parametrize(
    "fault", ["throttle", "error500", "drop_after_write", "partial"]
)
def test_each_fault_converges(env: Env, proxy: FaultProxy, fault: str) -> None:
    setup(env, proxy)
    proxy.rates[fault] = 0.4
    for _ in range(3):
        churn(env)
        env.run(syncpass.sync)
    assert proxy.counts[fault] > 0, proxy.counts
    assert_in_sync(env, "t")


def test_all_faults_and_latency_together_with_backfill_and_repair(env: Env, proxy: FaultProxy) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    env.sql("INSERT INTO t SELECT value, 'seed' FROM generate_series(1, 300)"
            if False else "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 300) "
            "INSERT INTO t SELECT x, 'seed' FROM s")
    env.run(capture.init)
    env.write_config(endpoint=proxy.endpoint, dynamodb={"max_retry_time": 60.0})
    proxy.rates.update(throttle=0.15, error500=0.15, drop_after_write=0.15, partial=0.3)
    proxy.latency = 0.005
    env.run(backfill.backfill)
    churn(env)
    env.run(syncpass.sync)
    env.client.delete_item(TableName=env.tables["t"], Key={"id": {"N": "1"}})
    assert env.run(verify.verify, repair=True).in_sync
    assert_in_sync(env, "t")
    assert all(proxy.counts[f] for f in ("throttle", "error500", "drop_after_write", "partial")), proxy.counts


def test_validation_exception_from_dynamodb_is_narrowed_to_the_bad_item(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynasync import items

    # Skip dynasync's own size check so DynamoDB itself rejects the batch.
    monkeypatch.setattr(items, "MAX_ITEM_BYTES", 10**9)
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    env.run(capture.init)
    conn = env.app_conn()
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, b"x") for i in range(40)])
    conn.execute("UPDATE t SET v = ? WHERE id = 17", (b"x" * (410 * 1024),))
    conn.close()
    r = env.run(syncpass.sync)
    assert r.rejected == 1
    assert len(env.items("t")) == 39
    rows = env.rows("SELECT tbl, k1, reason FROM _dynasync_dead_letters")
    assert rows[0][:2] == ("t", 17) and "rejected" in rows[0][2]


def test_run_survives_an_outage_backs_off_and_logs_recovered_once(env: Env, proxy: FaultProxy) -> None:
    setup(env, proxy)
    env.write_config(dynamodb={"max_retry_time": 0.5, "connect_timeout": 1.0},
                     sync={"interval": 0.2, "backoff_initial": 0.1, "backoff_max": 0.4})
    proxy.down = True
    log = env.dir / "daemon.log"
    started = time.monotonic()
    with log.open("w") as stderr:
        daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                                  stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        env.sql("INSERT INTO t VALUES (1, 'during outage')")
        # The outage lasts at least 3 s and until a pass has failed: on a busy
        # machine the daemon can take longer than 3 s to reach DynamoDB at all.
        wait_until(lambda: "pass failed" in log.read_text(), timeout=60)
        time.sleep(max(0.0, started + 3 - time.monotonic()))
        assert daemon.poll() is None, "the daemon must not exit on a transient error"
        st = json.loads(cli(env, "status", "--json").stdout)
        if st["pending_changes"] != 1:
            daemon.kill()
            raise AssertionError(f"{st} {daemon.communicate()} {log.read_text()} {proxy.counts}")
        proxy.down = False
        wait_until(lambda: len(env.items("t")) == 1, timeout=20)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    err = log.read_text()
    assert daemon.returncode == 0
    assert err.count("event=recovered") == 1, err
    assert err.count("level=warning") <= 3, err  # the failure burst is not logged pass by pass
