from __future__ import annotations

from conftest import Env

from dynasync import backfill, capture, syncpass, verify


def test_init_backfill_sync_verify(env: Env) -> None:
    env.table("users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    env.sql("INSERT INTO users VALUES (1, 'ann', 1.5), (2, 'bob', NULL)")
    env.run(capture.init)
    r = env.run(backfill.backfill)
    assert [t.rows for t in r.tables] == [2]
    env.sql("UPDATE users SET name = 'bobby' WHERE id = 2", "DELETE FROM users WHERE id = 1",
            "INSERT INTO users VALUES (3, 'cy', 2.25)")
    res = env.run(syncpass.sync)
    assert res.entries == 3
    items = sorted(env.items("users"), key=lambda i: int(i["id"]["N"]))
    assert items == [{"id": {"N": "2"}, "name": {"S": "bobby"}},
                     {"id": {"N": "3"}, "name": {"S": "cy"}, "score": {"N": "2.25"}}]
    assert env.run(verify.verify).in_sync
