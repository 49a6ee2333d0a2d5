"""Values: nothing a row holds can stop the daemon, and JSON numbers
arrive exactly. Classes 9 and 13."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from conftest import Env
from test_cli import DYNASYNC, wait_until

from dynasync import capture, syncpass, verify
from dynasync.exceptions import Poison
from dynasync.values import json_value

HOSTILE = {
    2: "[" * 300 + "]" * 300,  # nested a few hundred deep
    3: json.dumps({"pad": "x" * 390_000, "bad": "\ud800"}),  # a lone surrogate in a large item
    4: "[" * 200_000 + "]" * 200_000,  # deep enough to exhaust the parser's recursion
    5: '{"n": NaN}',
    6: '{"n": 1e400}',
    7: '{"n": 123456789012345678901234567890123456789}',  # 39 digits
}


def test_hostile_json_becomes_dead_letters_and_the_daemon_keeps_syncing(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
    env.options["t"] = {"json_columns": ["doc"]}
    env.write_config(sync={"interval": 0.2})
    env.run(capture.init)
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        conn = env.app_conn()
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, '{"ok": true}'), *HOSTILE.items()])
        conn.execute("INSERT INTO t VALUES (8, '[1, 2]')")
        conn.close()
        wait_until(lambda: env.rows("SELECT count(*) FROM _dynasync_dead_letters") == [(len(HOSTILE),)], 30)
        wait_until(lambda: sorted(int(i["id"]["N"]) for i in env.items("t")) == [1, 8], 30)
        reasons = dict(env.rows("SELECT k1, reason FROM _dynasync_dead_letters"))
        env.sql("UPDATE t SET doc = '{\"fixed\": 1}' WHERE id = 2")  # retried when the row changes
        wait_until(lambda: len(env.items("t")) == 3, 30)
        assert daemon.poll() is None  # still running
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "Traceback" not in err
    assert "nested" in reasons[2] and "surrogate" in reasons[3] and "nested" in reasons[4]
    assert "NaN" in reasons[5] and "range" in reasons[6] and "38 significant digits" in reasons[7]
    assert env.rows("SELECT k1 FROM _dynasync_dead_letters ORDER BY k1") == [(k,) for k in range(3, 8)]


def test_json_numbers_arrive_exactly_and_verify_compares_exactly(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
    env.options["t"] = {"json_columns": ["doc"]}
    env.write_config()
    env.run(capture.init)
    exact = "12345678901234567.89"
    wide = "1.2345678901234567890123456789012345678"  # 38 digits: beyond a float, within DynamoDB
    env.sql(f"INSERT INTO t VALUES (1, '{{\"a\": {exact}, \"b\": [{wide}, 100000000000000000001]}}')")
    env.run(syncpass.sync)
    (item,) = env.items("t")
    doc = item["doc"]["M"]
    assert doc["a"] == {"N": exact} and doc["b"]["L"][0] == {"N": wide}
    assert doc["b"]["L"][1] == {"N": "100000000000000000001"}
    assert env.run(verify.verify).in_sync
    # Differing only at the 38th digit is a difference.
    off = wide[:-1] + "9"
    env.client.update_item(TableName=env.tables["t"], Key={"id": {"N": "1"}},
                           UpdateExpression="SET doc.b[0] = :v", ExpressionAttributeValues={":v": {"N": off}})
    r = env.run(verify.verify)
    assert not r.in_sync and r.tables[0].different == 1
    assert env.run(verify.verify, repair=True).in_sync


@pytest.mark.parametrize("text", ['{"a": "\\ud800"}', "[" * 32 + "]" * 32, "-Infinity", "1e-131"])
def test_json_that_dynamodb_cannot_hold_is_poison(text: str) -> None:
    with pytest.raises(Poison):
        json_value(text, "c")


def test_deepest_json_dynamodb_holds_round_trips(env: Env) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
    env.options["t"] = {"json_columns": ["doc"]}
    env.write_config()
    env.run(capture.init)
    env.sql("INSERT INTO t VALUES (1, ?)", params=("[" * 31 + "]" * 31,))  # one more is refused by DynamoDB
    r = env.run(syncpass.sync)
    assert r.rejected == 0
    (item,) = env.items("t")
    node, depth = item["doc"], 0
    while node.get("L"):
        node, depth = node["L"][0], depth + 1
    assert depth == 30 and node == {"L": []}
