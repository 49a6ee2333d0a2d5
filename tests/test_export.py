"""`dead-letters --export`: every dead letter with its row as it is now, as JSON
Lines in a 0600 file or an S3 object (against the fake target and store)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeStore, FakeTarget
from unit_env import app_conn

from dynasync import capture, cli, config, export, syncpass
from dynasync.app import App
from dynasync.exceptions import StateError, UsageError
from dynasync.values import InvalidText


def _app(tmp_path: Path, *ddl: str, tables: tuple[str, ...] = ("t",), name: str = "app.db") -> tuple[App, FakeStore]:
    db = tmp_path / name
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for stmt in ddl:
        conn.execute(stmt)
    conn.close()
    data = {"source": {"database": str(db)}, "dynamodb": {"create_tables": True, "max_retry_time": 2.0},
            "tables": [{"source": t, "target": f"target-{t}"} for t in tables]}
    fake, store = FakeTarget(), FakeStore()
    app = App(config.parse(data), lambda _cfg: fake, store_factory=lambda _cfg: store)
    capture.init(app)
    return app, store


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _export(app: App, dest: str, table: str | None = None, chunk: int = export.CHUNK) -> export.Export:
    sink = export.Export(export.destination(dest), chunk=chunk)
    try:
        sink.add(app, table)
        sink.finish(app)
    finally:
        sink.close()
    return sink


def test_each_sqlite_value_has_one_exact_json_form() -> None:
    """TEXT a string, INTEGER an exact number, REAL a number (non-finite as a
    string), BLOB and text that is not UTF-8 base64, NULL null."""
    assert export.encode("héllo") == "héllo"
    assert export.encode(2**63 - 1) == 9223372036854775807
    assert json.dumps(export.encode(-(2**63))) == "-9223372036854775808"
    assert json.dumps(export.encode(0.1)) == "0.1" and json.dumps(export.encode(1.0)) == "1.0"
    assert [export.encode(v) for v in (math.inf, -math.inf, math.nan)] == ["Infinity", "-Infinity", "NaN"]
    assert export.encode(b"\x00\xff") == {"base64": "AP8="}
    assert export.encode(InvalidText(b"\xff\xfeA")) == {"base64": "//5B"}
    assert export.encode(None) is None


def test_a_file_export_has_a_line_per_dead_letter_with_the_row_as_it_is_now(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v, n REAL)",
                  "CREATE TABLE b (k BLOB PRIMARY KEY, v)",
                  "CREATE TABLE p (x TEXT, y INTEGER, z, PRIMARY KEY (y, x))", tables=("t", "b", "p"))
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 'ok', 1.5), (2, 'gone', 9e999), (3, CAST(X'FFFE41' AS TEXT), -9e999)")
    c.execute("INSERT INTO t VALUES (4, ?, 9e999)", (2**63 - 1,))
    c.execute("INSERT INTO b VALUES (X'00FF', 9e999)")
    c.execute("INSERT INTO p VALUES ('a', 7, 9e999)")
    syncpass.Syncer(app).run_pass()
    c.execute("DELETE FROM t WHERE id = 2")  # not synced yet: the dead letter is still there, its row gone
    out = tmp_path / "dead.jsonl"
    sink = _export(app, str(out))
    assert sink.count == 5 and sink.destination == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = {(d["table"], json.dumps(d["key"])): d for d in _lines(out)}
    assert {d["database"] for d in lines.values()} == {str(app.config.database)}
    assert lines[("t", '{"id": 2}')]["row"] is None
    assert lines[("t", '{"id": 3}')]["row"] == {"id": 3, "v": {"base64": "//5B"}, "n": "-Infinity"}
    four = lines[("t", '{"id": 4}')]
    assert four["row"] == {"id": 4, "v": 9223372036854775807, "n": "Infinity"}
    assert four["kind"] == "unstorable" and four["attempts"] == 1 and "finite" in four["reason"]
    assert four["first_failed"] <= four["last_failed"]
    assert lines[("b", '{"k": {"base64": "AP8="}}')]["row"] == {"k": {"base64": "AP8="}, "v": "Infinity"}
    # Key columns by name, in primary-key order (y, x), not table order.
    assert list(lines[("p", '{"y": 7, "x": "a"}')]["key"]) == ["y", "x"]
    assert len(lines) == 5


def test_rows_are_found_by_their_exact_key_whatever_it_holds(tmp_path: Path) -> None:
    """A key that is not UTF-8, or NULL, still finds its row (compared in SQL,
    storage class kept), and a TEXT key never finds a BLOB twin."""
    app, _ = _app(tmp_path, "CREATE TABLE k (id TEXT PRIMARY KEY, v)", "CREATE TABLE u (id PRIMARY KEY, v)",
                  tables=("k", "u"))
    c = app_conn(app)
    c.execute("INSERT INTO k VALUES (CAST(X'FF41' AS TEXT), 'bad key'), (NULL, 'null key')")
    c.execute("INSERT INTO u VALUES ('a', 9e999), (X'61', 'the blob twin')")
    syncpass.Syncer(app).run_pass()
    out = tmp_path / "dead.jsonl"
    _export(app, str(out))
    rows = {(d["table"], json.dumps(d["key"])): d["row"] for d in _lines(out)}
    assert rows[("k", '{"id": {"base64": "/0E="}}')] == {"id": {"base64": "/0E="}, "v": "bad key"}
    assert rows[("k", '{"id": null}')] == {"id": None, "v": "null key"}
    assert rows[("u", '{"id": "a"}')] == {"id": "a", "v": "Infinity"}


def test_the_export_reads_chunk_by_chunk_and_writes_each_dead_letter_once(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    app_conn(app).executemany("INSERT INTO t VALUES (?, 9e999)", [(i,) for i in range(7)])
    syncpass.Syncer(app).run_pass()
    out = tmp_path / "dead.jsonl"
    _export(app, str(out), chunk=2)
    assert sorted(d["key"]["id"] for d in _lines(out)) == list(range(7))


def test_table_restricts_the_export_to_one_table(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", "CREATE TABLE s (id INTEGER PRIMARY KEY, v)",
                  tables=("t", "s"))
    c = app_conn(app)
    c.execute("INSERT INTO t VALUES (1, 9e999)")
    c.execute("INSERT INTO s VALUES (1, 9e999)")
    syncpass.Syncer(app).run_pass()
    out = tmp_path / "dead.jsonl"
    assert _export(app, str(out), table="s").count == 1 and [d["table"] for d in _lines(out)] == ["s"]


def test_an_existing_file_is_replaced_whole_with_mode_0600(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    app_conn(app).execute("INSERT INTO t VALUES (1, 9e999)")
    syncpass.Syncer(app).run_pass()
    out = tmp_path / "dead.jsonl"
    out.write_text("old\n" * 100)
    out.chmod(0o644)
    _export(app, str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and len(_lines(out)) == 1
    assert [f for f in os.listdir(tmp_path) if "dead" in f] == ["dead.jsonl"]  # no temporary file left


def test_a_failed_export_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    capture.uninstall(app)  # no state: the export fails
    out = tmp_path / "exports" / "dead.jsonl"
    out.parent.mkdir()
    out.write_text("old\n")
    with pytest.raises(StateError):
        _export(app, str(out))
    assert out.read_text() == "old\n" and os.listdir(out.parent) == ["dead.jsonl"]


def test_a_database_that_fails_midway_adds_no_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines of a database whose export failed are taken back; the others stay."""
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    app_conn(app).executemany("INSERT INTO t VALUES (?, 9e999)", [(i,) for i in range(5)])
    syncpass.Syncer(app).run_pass()
    out = tmp_path / "dead.jsonl"
    sink = export.Export(export.destination(str(out)), chunk=2)
    try:
        sink.add(app)
        real = export.encode
        seen: list[object] = []

        def failing(value: object) -> Any:
            seen.append(value)
            if len(seen) > 12:  # past the first chunk
                raise StateError("the database went away")
            return real(value)

        monkeypatch.setattr(export, "encode", failing)
        with pytest.raises(StateError):
            sink.add(app)
        sink.finish(app)
    finally:
        sink.close()
    assert sink.count == 5 and sorted(d["key"]["id"] for d in _lines(out)) == list(range(5))


def test_an_s3_prefix_gets_a_timestamped_key_and_an_exact_key_is_kept(tmp_path: Path) -> None:
    app, store = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    app_conn(app).execute("INSERT INTO t VALUES (1, 9e999)")
    syncpass.Syncer(app).run_pass()
    sink = _export(app, "s3://exports-bucket/dynasync/")
    ((bucket, key),) = store.objects
    assert bucket == "exports-bucket" and key.startswith("dynasync/dead-letters-") and key.endswith(".jsonl")
    assert sink.destination == f"s3://exports-bucket/{key}"
    line = json.loads(store.objects[(bucket, key)][0])
    assert line["key"] == {"id": 1} and line["row"] == {"id": 1, "v": "Infinity"}
    _export(app, "s3://exports-bucket/exact/name.jsonl")
    assert ("exports-bucket", "exact/name.jsonl") in store.objects
    assert export.destination("s3://b").key.startswith("dead-letters-")
    assert not list(Path(tempfile.gettempdir()).glob("dynasync-export-*"))


@pytest.mark.parametrize("bad", ["s3://", "s3:///key", ""])
def test_a_destination_without_a_bucket_or_path_is_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        export.destination(bad)


def test_a_fleet_exports_every_database_into_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeTarget()
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    for name in ("acme", "globex"):
        conn = sqlite3.connect(tenants / f"{name}.db", isolation_level=None)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
        conn.close()
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('[source]\ndatabases = "tenants/*.db"\n[dynamodb]\nregion = "us-east-1"\ncreate_tables = true\n'
                   '[[tables]]\nsource = "t"\ntarget = "t-{database}"\n')
    assert cli.main(["init", "--config", str(cfg)], lambda _c: fake) == 0
    for name in ("acme", "globex"):
        conn = sqlite3.connect(tenants / f"{name}.db", isolation_level=None)
        conn.execute("INSERT INTO t VALUES (1, 9e999)")
        conn.close()
    assert cli.main(["sync", "--config", str(cfg)], lambda _c: fake) == 0
    capsys.readouterr()
    out = tmp_path / "dead.jsonl"
    assert cli.main(["dead-letters", "--export", str(out), "--config", str(cfg)], lambda _c: fake) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"dead-letters: exported 2 dead letter(s) to {out}"
    assert sorted(d["database"] for d in _lines(out)) == [str(tenants / "acme.db"), str(tenants / "globex.db")]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_export_is_refused_with_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = _app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'[source]\ndatabase = "{app.config.database}"\n[dynamodb]\nregion = "us-east-1"\n'
                   '[[tables]]\nsource = "t"\ntarget = "target-t"\n')
    code = cli.main(["dead-letters", "--export", str(tmp_path / "x.jsonl"), "--retry", "--config", str(cfg)],
                    lambda _c: FakeTarget())
    assert code == 2 and "--export" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
