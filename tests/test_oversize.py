"""Rows bigger than DynamoDB's 400 KB item limit, under each `oversize` policy,
against the fake target and the fake S3: the stored forms, decode_item, the
objects' lifecycle (written before their items, deleted once no item points to
them, whatever crashes in between), verify through the pointer, and S3 outages."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeStore, FakeTarget
from unit_env import app_conn

import dynasync
from dynasync import capture, changelog, config, objects, oversize, state, syncpass
from dynasync import tables as tables_module
from dynasync.app import App
from dynasync.exceptions import ConfigError, MappingError, TargetError
from dynasync.status import status
from dynasync.values import MAX_ITEM_BYTES, Item, item_size
from dynasync.verify import verify

MB = 1024 * 1024


def _text(n: int, seed: int = 0) -> str:
    """Text of n characters that zlib compresses about 5x, like documents do."""
    words = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:6] + " " for i in range(40)]
    out = [words[(i * 7 + i // 13) % len(words)] for i in range(n // 7 + 1)]
    return "".join(out)[:n]


def _app(tmp_path: Path, policy: str, **table: Any) -> tuple[App, FakeTarget, FakeStore]:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, title TEXT, body TEXT, blob BLOB)")
    conn.close()
    data = {
        "source": {"database": str(db)},
        "dynamodb": {"create_tables": True, "max_retry_time": 0.5, "region": "us-east-1"},
        "s3": {"bucket": "the-bucket", "prefix": "synced/"},
        "tables": [{"source": "t", "target": "target-t", "oversize": policy, **table}],
    }
    fake, store = FakeTarget(), FakeStore()
    app = App(config.parse(data), lambda _cfg: fake, store_factory=lambda _cfg: store)
    capture.init(app)
    return app, fake, store


def _item(fake: FakeTarget, id_: int) -> Item | None:
    for it in fake.items("target-t").values():
        if it["id"] == {"N": str(id_)}:
            return it
    return None


def _pass(app: App) -> syncpass.PassResult:
    return syncpass.Syncer(app).run_pass()


def test_a_row_over_400_kb_is_compressed_until_it_fits_and_decodes_back(tmp_path: Path) -> None:
    app, fake, _ = _app(tmp_path, "compress")
    body = _text(MB)
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 'small', ?, NULL)", (body,))
    result = _pass(app)
    assert result.rejected == 0
    item = _item(fake, 1)
    assert item is not None
    assert item_size(item) <= MAX_ITEM_BYTES
    assert item["title"] == {"S": "small"}  # small attributes stay as they are
    assert "B" in item["body"]
    assert item[oversize.MARKER] == {"M": {"v": {"N": "1"}, "zlib": {"SS": ["body"]}}}
    # The documented format: zlib of the attribute value in DynamoDB JSON.
    assert zlib.decompress(item["body"]["B"]).decode() == '{"S":' + f'"{body}"' + "}"
    assert dynasync.decode_item(item) == {"id": {"N": "1"}, "title": {"S": "small"}, "body": {"S": body}}


def test_a_row_that_fits_is_stored_plainly_under_every_policy(tmp_path: Path) -> None:
    for policy in ("compress", "s3"):
        (tmp_path / policy).mkdir()
        app, fake, store = _app(tmp_path / policy, policy)
        with app_conn(app) as c:
            c.execute("INSERT INTO t VALUES (1, 'small', ?, NULL)", ("x" * 300_000,))
        _pass(app)
        assert _item(fake, 1) == {"id": {"N": "1"}, "title": {"S": "small"}, "body": {"S": "x" * 300_000}}
        assert store.objects == {}


def test_a_row_that_compression_cannot_fit_is_a_dead_letter_saying_so(tmp_path: Path) -> None:
    app, fake, _ = _app(tmp_path, "compress")
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 'x', NULL, ?)", (os.urandom(600_000),))
    result = _pass(app)
    assert result.rejected == 1
    assert _item(fake, 1) is None
    (dead,) = state.dead_letters(app.conn)
    assert "compressed it is still" in dead.reason


def test_the_default_policy_keeps_an_oversized_row_a_dead_letter(tmp_path: Path) -> None:
    app, fake, store = _app(tmp_path, "dead-letter")
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 'x', ?, NULL)", (_text(MB),))
    assert _pass(app).rejected == 1
    assert _item(fake, 1) is None and store.objects == {}
    (dead,) = state.dead_letters(app.conn)
    assert dead.reason.startswith("item is ") and "400 KB" in dead.reason


def test_s3_moves_the_largest_attributes_to_one_object_the_item_points_to(tmp_path: Path) -> None:
    app, fake, store = _app(tmp_path, "s3")
    body, blob = _text(MB), os.urandom(300_000)
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (7, 'small', ?, ?)", (body, blob))
    assert _pass(app).rejected == 0
    item = _item(fake, 7)
    assert item is not None and item_size(item) <= MAX_ITEM_BYTES
    assert set(item) == {"id", "title", "blob", oversize.MARKER}  # the largest moved, enough to fit
    p = oversize.pointer(item)
    assert p is not None and p.bucket == "the-bucket" and p.attributes == ("body",)
    assert p.key.startswith("synced/target-t/") and p.key.endswith(f"/{p.sha256}.json")
    stored, _ = store.objects[(p.bucket, p.key)]
    assert len(stored) == p.size and hashlib.sha256(stored).hexdigest() == p.sha256
    decoded = dynasync.decode_item(item, fetch=lambda b, k: store.objects[(b, k)][0])
    assert decoded == {"id": {"N": "7"}, "title": {"S": "small"}, "body": {"S": body}, "blob": {"B": blob}}


def test_an_object_is_deleted_only_once_no_item_points_to_it(tmp_path: Path) -> None:
    """Big, bigger, small, big again, deleted: after each pass exactly the object
    the item points to exists, and none once the row is gone."""
    app, fake, store = _app(tmp_path, "s3")
    c = app_conn(app)

    def pointed() -> set[str]:
        item = _item(fake, 1)
        p = oversize.pointer(item) if item is not None else None
        return {p.key} if p is not None else set()

    for body in (_text(MB), _text(2 * MB, seed=1), "small now", _text(MB)):
        c.execute("INSERT OR REPLACE INTO t VALUES (1, 't', ?, NULL)", (body,))
        _pass(app)
        assert store.keys() == pointed()
        assert dynasync.decode_item(_item(fake, 1) or {}, fetch=lambda b, k: store.objects[(b, k)][0])["body"] == {
            "S": body}
    c.execute("DELETE FROM t")
    _pass(app)
    assert _item(fake, 1) is None and store.keys() == set()
    assert app.conn.execute("SELECT count(*) FROM _dynasync_objects").fetchone()[0] == 0


def test_a_crash_after_the_object_is_written_leaves_no_orphan_once_the_next_pass_runs(tmp_path: Path) -> None:
    app, fake, store = _app(tmp_path, "s3")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))

    def crash(requests: Any) -> int:
        raise TargetError("the process died here")

    fake.fault = crash  # the object is written, its item never is
    with pytest.raises(TargetError):
        _pass(app)
    assert len(store.objects) == 1 and _item(fake, 1) is None
    fake.fault = None
    c.execute("UPDATE t SET body = ?", (_text(MB, seed=2),))  # the row changed meanwhile
    _pass(app)
    assert store.keys() == {oversize.pointer(_item(fake, 1) or {}).key}  # type: ignore[union-attr]


def test_s3_out_of_reach_holds_the_rows_back_and_loses_nothing(tmp_path: Path) -> None:
    app, fake, store = _app(tmp_path, "s3")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    c.execute("INSERT INTO t VALUES (2, 'small', 'fits', NULL)")
    store.down = True
    with pytest.raises(TargetError):
        _pass(app)
    assert _item(fake, 1) is None
    assert state.high_water_mark(app.conn) == 0  # nothing acknowledged past the big row
    store.down = False
    _pass(app)
    assert _item(fake, 2) is not None and oversize.pointer(_item(fake, 1) or {}) is not None
    assert state.high_water_mark(app.conn) > 0


def test_s3_out_of_reach_while_deleting_stale_objects_fails_no_pass_and_deletes_them_later(
    tmp_path: Path,
) -> None:
    app, fake, store = _app(tmp_path, "s3")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    syncer = syncpass.Syncer(app)
    syncer.run_pass()
    c.execute("DELETE FROM t")
    original = store.delete

    def down(bucket: str, keys: Any) -> None:
        raise TargetError("S3 delete_objects: AccessDenied")

    store.delete = down  # type: ignore[method-assign]
    syncer.run_pass()  # the item is deleted; its object cannot be, yet
    assert _item(fake, 1) is None and len(store.objects) == 1
    s = status(app)
    assert (s.s3_objects, s.s3_items_to_clean) == (1, 1)  # status shows the cleanup waiting
    store.delete = original  # type: ignore[method-assign]
    syncer.run_pass()
    assert store.objects == {}
    s = status(app)
    assert (s.s3_objects, s.s3_items_to_clean) == (0, 0)


def test_objects_of_a_target_that_is_gone_hold_back_no_other_targets_objects(tmp_path: Path) -> None:
    """A table taken out of the config and its DynamoDB table deleted leave their
    objects recorded: reading those items back fails, and must not keep every other
    table's stale objects (nor verify --repair) waiting for that table to come back."""
    app, fake, store = _app(tmp_path, "s3")
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    _pass(app)
    store.objects[("the-bucket", "synced/gone/abc/x.json")] = (b"{}", 0.0)
    with app_conn(app) as w:  # sorts before target-t: collect meets it first
        w.execute("INSERT INTO _dynasync_objects VALUES ('gone', '{\"id\":{\"N\":\"1\"}}', 'the-bucket', "
                  "'synced/gone/abc/x.json', 1)")
    c.execute("UPDATE t SET body = 'small now'")
    _pass(app)
    assert oversize.pointer(_item(fake, 1) or {}) is None
    assert store.keys() == {"synced/gone/abc/x.json"}  # target-t's object is deleted; gone's waits
    c.execute("UPDATE t SET body = ?", (_text(MB, seed=5),))
    _pass(app)
    assert verify(app, repair=True).in_sync


def test_an_item_lands_within_the_sweeps_grace_of_its_objects_write_even_under_a_write_budget(
    tmp_path: Path,
) -> None:
    """verify's sweep (run by another database sharing the prefix) deletes an
    unreferenced object older than the grace: no item may reach DynamoDB later
    than that after its object was written, however long the write budget holds
    its batch back."""
    app, fake, store = _app(tmp_path, "s3")
    d = app.config.dynamodb
    app.reconfigure(dataclasses.replace(app.config, dynamodb=dataclasses.replace(
        d, max_write_rate=10.0, connect_timeout=0.1, read_timeout=0.1, max_concurrency=1)))
    grace = objects.grace(app.config.dynamodb.max_retry_time, 0.2)
    late: list[float] = []

    def landing(requests: Any) -> int:
        now = time.time()
        for r in requests:
            p = oversize.pointer(r["PutRequest"]["Item"])
            if p is not None:
                late.append(now - store.objects[(p.bucket, p.key)][1])
        return 0

    fake.fault = landing
    with app_conn(app) as c:
        for i in range(60):
            c.execute("INSERT INTO t VALUES (?, 't', ?, NULL)", (i, _text(450_000, seed=i % 3) + str(i)))
    _pass(app)
    assert len(late) == 60 and max(late) < grace, max(late)


def test_verify_compares_through_the_pointer_and_repairs_a_missing_object(tmp_path: Path) -> None:
    app, _fake, store = _app(tmp_path, "s3")
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    _pass(app)
    store.keep_checksums = False  # S3 kept no SHA-256: verify reads the body to hash it
    assert verify(app).in_sync
    store.objects.clear()  # a lifecycle rule, an operator: the item points to nothing
    report = verify(app)
    assert not report.in_sync and report.tables[0].different == 1
    assert verify(app, repair=True).in_sync
    assert verify(app).in_sync and len(store.objects) == 1


def test_verify_finds_orphans_under_the_prefix_and_repair_deletes_only_them(tmp_path: Path) -> None:
    app, _fake, store = _app(tmp_path, "s3")
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    _pass(app)
    kept = set(store.keys())
    # What a lost state directory or restored database leaves: objects nothing records.
    store.objects[("the-bucket", "synced/target-t/abc/old.json")] = (b"{}", 0.0)
    store.objects[("the-bucket", "elsewhere/not-ours.json")] = (b"{}", 0.0)
    store.objects[("the-bucket", "synced/target-t/abc/just-written.json")] = (b"{}", 1e12)  # in flight
    report = verify(app)
    assert report.tables[0].orphans == 1 and not report.in_sync
    assert verify(app, repair=True).tables[0].repaired == 1
    assert store.keys() == kept | {"elsewhere/not-ours.json", "synced/target-t/abc/just-written.json"}


def test_compressed_attributes_compare_by_content_whatever_zlib_made_them() -> None:
    value = {"S": _text(10_000)}
    text = '{"S":"' + value["S"] + '"}'
    marker = {"M": {"v": {"N": "1"}, "zlib": {"SS": ["body"]}}}
    a = {"id": {"N": "1"}, "body": {"B": zlib.compress(text.encode(), 1)}, oversize.MARKER: marker}
    b = {"id": {"N": "1"}, "body": {"B": zlib.compress(text.encode(), 9)}, oversize.MARKER: marker}
    assert a != b and oversize.same_stored(a, b)
    plain = {"id": {"N": "1"}, "body": value}
    assert not oversize.same_stored(a, plain)  # stored compressed, though it should not be


def test_decode_item_refuses_a_format_it_does_not_know() -> None:
    item = {"id": {"N": "1"}, oversize.MARKER: {"M": {"v": {"N": "2"}}}}
    with pytest.raises(ValueError, match="format 2"):
        dynasync.decode_item(item)
    assert dynasync.decode_item({"id": {"N": "1"}}) == {"id": {"N": "1"}}


def test_a_changed_object_fails_decoding_by_its_sha256(tmp_path: Path) -> None:
    app, fake, _store = _app(tmp_path, "s3")
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    _pass(app)
    item = _item(fake, 1) or {}
    with pytest.raises(ValueError, match="SHA-256"):
        dynasync.decode_item(item, fetch=lambda b, k: b'{"body":{"S":"tampered"}}')


def test_the_config_refuses_s3_without_a_bucket_and_unknown_policies(tmp_path: Path) -> None:
    base = {"source": {"database": str(tmp_path / "x.db")}}
    with pytest.raises(ConfigError, match=r"needs \[s3\] bucket"):
        config.parse({**base, "tables": [{"source": "t", "target": "tgt", "oversize": "s3"}]})
    with pytest.raises(ConfigError, match="dead-letter"):
        config.parse({**base, "tables": [{"source": "t", "target": "tgt", "oversize": "zip"}]})
    with pytest.raises(ConfigError, match="_dynasync"):
        config.parse({**base, "tables": [{"source": "t", "target": "tgt", "oversize": "compress",
                                          "constants": {"_dynasync": "x"}}]})


def test_a_column_named_like_the_marker_is_refused_under_a_policy_that_writes_it(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).execute('CREATE TABLE t (id INTEGER PRIMARY KEY, "_dynasync" TEXT)')
    for policy, refused in (("dead-letter", False), ("compress", True)):
        data = {"source": {"database": str(db)}, "dynamodb": {"region": "us-east-1", "create_tables": True},
                "tables": [{"source": "t", "target": "tgt", "oversize": policy}]}
        app = App(config.parse(data), lambda _cfg: FakeTarget())
        if refused:
            with pytest.raises(MappingError, match="_dynasync"):
                capture.init(app)
        else:
            capture.init(app)


def test_a_slice_of_big_rows_holds_about_its_byte_limit_and_a_pass_still_applies_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However big the rows, a pass reads them a bounded number of bytes at a
    time (memory stays flat), never fewer than one row, and applies them all."""
    app, fake, _ = _app(tmp_path, "compress")
    with app_conn(app) as c:
        c.executemany("INSERT INTO t VALUES (?, 't', ?, NULL)", [(i, _text(100_000, seed=i)) for i in range(60)])
        c.execute("INSERT INTO t VALUES (1000, 't', ?, NULL)", (_text(3 * MB),))  # alone over the limit
    reads = {"t": syncpass.Syncer(app).schema.refresh().tables["t"].read}
    first = changelog.read_slice(app.conn, reads, 0, 5000, max_bytes=MB)
    assert first is not None and 5 <= first.entries <= 12 and first.bytes <= 2 * MB
    high, sizes = 0, []
    while (sl := changelog.read_slice(app.conn, reads, high, 5000, max_bytes=MB)) is not None:
        sizes.append(sl.entries)
        high = sl.high
    assert sum(sizes) == 61 and 1 in sizes  # the 3 MB row came alone
    monkeypatch.setattr(syncpass, "SLICE_BYTES", MB)
    result = _pass(app)
    assert result.slices >= 6 and result.applied == 61
    assert len(fake.items("target-t")) == 61


def test_a_copy_reads_big_rows_a_bounded_number_of_bytes_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backfill, reconcile and verify read chunks in key order: big rows come
    fewer at a time (never fewer than one), none skipped, none twice."""
    app, _, _ = _app(tmp_path, "compress")
    with app_conn(app) as c:
        c.executemany("INSERT INTO t VALUES (?, 't', ?, NULL)", [(i, _text(100_000, seed=i)) for i in range(60)])
        c.execute("INSERT INTO t VALUES (1000, 't', ?, NULL)", (_text(3 * MB),))
    monkeypatch.setattr(tables_module, "READ_BYTES", MB)
    table = syncpass.Syncer(app).schema.refresh().tables["t"]
    sizes, ids = [], []
    for chunk in table.chunks(app.conn, 1000):
        sizes.append(len(chunk.rows))
        ids.extend(r.k1 for r in chunk.refs)
    assert ids == [*range(60), 1000]
    assert max(sizes) <= 12 and sizes[-1] == 1


def test_verify_repair_sweeps_a_table_moved_off_s3_whose_objects_nothing_records(tmp_path: Path) -> None:
    """Objects a lost record left behind (a restore, a new file) are swept under
    the table's prefix even after the table moved to another policy."""
    app, fake, store = _app(tmp_path, "s3")
    with app_conn(app) as c:
        c.execute("INSERT INTO t VALUES (1, 't', ?, NULL)", (_text(MB),))
    _pass(app)
    app.conn.execute("DELETE FROM _dynasync_objects")  # the record is lost
    data = {**app.config.raw, "tables": [{"source": "t", "target": "target-t", "oversize": "compress"}]}
    moved = App(config.parse(data), lambda _cfg: fake, store_factory=lambda _cfg: store)
    app.close()
    syncpass.Syncer(moved).run_pass()  # the mapping changed: reconciled, the item now compressed
    assert oversize.pointer(_item(fake, 1) or {}) is None and len(store.objects) == 1
    for key, (body, _) in list(store.objects.items()):
        store.objects[key] = (body, 0.0)  # written long ago
    report = verify(moved)
    assert report.tables[0].orphans == 1
    assert verify(moved, repair=True).in_sync and store.objects == {}
