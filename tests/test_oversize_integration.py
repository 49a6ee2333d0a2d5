"""Rows over 400 KB against DynamoDB Local and moto's S3 server: both policies,
rows crossing the limit both ways, deletes, verify, and decode_item through
boto3's default S3 client."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest
from conftest import Env, S3Bucket

import dynasync
from dynasync import capture, config, oversize, syncpass
from dynasync.exceptions import TargetError
from dynasync.s3 import S3Store
from dynasync.values import MAX_ITEM_BYTES, item_size
from dynasync.verify import verify

MB = 1024 * 1024


def _text(n: int, seed: int = 0) -> str:
    words = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:6] + " " for i in range(40)]
    return "".join(words[(i * 7 + i // 13) % len(words)] for i in range(n // 7 + 1))[:n]


def _setup(env: Env, s3: S3Bucket, policy: str) -> None:
    env.table("docs", "CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT, data BLOB)")
    env.options["docs"] = {"oversize": policy}
    env.write_config(s3={"bucket": s3.bucket, "prefix": "dynasync/", "endpoint_url": s3.endpoint})
    env.run(capture.init)


def _objects(s3: S3Bucket) -> set[str]:
    return s3.keys()


def _by_id(env: Env) -> dict[int, dict[str, Any]]:
    return {int(it["id"]["N"]): it for it in env.client.scan(TableName=env.tables["docs"],
                                                            ConsistentRead=True)["Items"]}


def _decode(item: dict[str, Any], s3: S3Bucket) -> dict[str, Any]:
    return dynasync.decode_item(item, fetch=s3.body)


@pytest.mark.parametrize("policy", ["compress", "s3"])
def test_rows_cross_the_limit_both_ways_and_deletes_leave_nothing(env: Env, s3: S3Bucket, policy: str) -> None:
    _setup(env, s3, policy)
    c = env.app_conn()
    bodies = {1: _text(MB), 2: "small", 3: _text(600_000, seed=3)}
    for i, body in bodies.items():
        c.execute("INSERT INTO docs VALUES (?, 't', ?, NULL)", (i, body))
    assert env.run(lambda app: syncpass.Syncer(app).run_pass()).rejected == 0
    c.execute("UPDATE docs SET body = 'small now' WHERE id = 1")  # shrinks below the limit
    c.execute("UPDATE docs SET body = ? WHERE id = 2", (_text(MB, seed=2),))  # grows above it
    bodies.update({1: "small now", 2: _text(MB, seed=2)})
    env.run(lambda app: syncpass.Syncer(app).run_pass())
    items = _by_id(env)
    for i, body in bodies.items():
        assert item_size(items[i]) <= MAX_ITEM_BYTES
        assert _decode(items[i], s3)["body"] == {"S": body}
    pointed = {p.key for it in items.values() if (p := oversize.pointer(it)) is not None}
    assert _objects(s3) == pointed
    assert len(pointed) == (2 if policy == "s3" else 0)
    assert env.run(verify).in_sync
    c.execute("DELETE FROM docs")
    env.run(lambda app: syncpass.Syncer(app).run_pass())
    assert _by_id(env) == {} and _objects(s3) == set()


def test_decode_item_reads_s3_through_boto3s_default_client(
    env: Env, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(env, s3, "s3")
    body = _text(MB)
    env.sql("INSERT INTO docs VALUES (1, 't', ?, NULL)", params=(body,))
    env.run(lambda app: syncpass.Syncer(app).run_pass())
    (item,) = _by_id(env).values()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)  # the standard AWS setting a reader would use
    from dynasync import s3 as s3_module

    s3_module._default_client.cache_clear()
    try:
        assert dynasync.decode_item(item)["body"] == {"S": body}
    finally:
        s3_module._default_client.cache_clear()


def test_verify_repair_restores_a_deleted_object_and_removes_orphans(env: Env, s3: S3Bucket) -> None:
    _setup(env, s3, "s3")
    env.write_config(dynamodb={"max_retry_time": 0.5, "connect_timeout": 0.5, "read_timeout": 0.5})
    env.sql("INSERT INTO docs VALUES (1, 't', ?, NULL)", params=(_text(MB),))
    env.run(lambda app: syncpass.Syncer(app).run_pass())
    (kept,) = _objects(s3)
    s3.client.delete_object(Bucket=s3.bucket, Key=kept)
    orphan = f"dynasync/{env.tables['docs']}/0000/orphan.json"
    s3.client.put_object(Bucket=s3.bucket, Key=orphan, Body=b"{}")
    time.sleep(2.5)  # older than the grace a write still on its way gets (1.5 s here)
    report = env.run(verify)
    assert report.tables[0].different == 1 and report.tables[0].orphans == 1
    assert env.run(lambda app: verify(app, repair=True)).in_sync
    assert _objects(s3) == {kept} and env.run(verify).in_sync


def test_a_binary_attribute_that_does_not_compress_goes_to_s3_whole(env: Env, s3: S3Bucket) -> None:
    _setup(env, s3, "s3")
    data = os.urandom(700_000)
    env.sql("INSERT INTO docs VALUES (1, 't', NULL, ?)", params=(data,))
    env.run(lambda app: syncpass.Syncer(app).run_pass())
    (item,) = _by_id(env).values()
    assert _decode(item, s3)["data"] == {"B": data}


def test_a_bucket_that_does_not_exist_is_an_error_naming_it_not_a_missing_object(s3: S3Bucket) -> None:
    """S3 answers NoSuchBucket with a 404, as it does a missing object: writing,
    deleting and listing must fail naming the bucket, never pass for "no such object"."""
    cfg = config.parse({
        "source": {"database": "unused.db"},
        "dynamodb": {"region": "us-east-1"},
        "s3": {"bucket": "no-such-bucket", "endpoint_url": s3.endpoint},
        "tables": [{"source": "t", "target": "docs", "oversize": "s3"}],
    })
    store = S3Store(cfg)
    body = b"{}"
    calls = [
        lambda: store.put("no-such-bucket", "k.json", body, hashlib.sha256(body).hexdigest()),
        lambda: store.delete("no-such-bucket", ["k.json"]),
        lambda: list(store.list("no-such-bucket", "p/")),
    ]
    for call in calls:
        with pytest.raises(TargetError, match="NoSuchBucket"):
            call()
