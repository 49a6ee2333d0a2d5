"""`dynasync dead-letters --export`, the real command, against DynamoDB Local and
moto's S3 server: a 0600 file, and an object in a bucket."""

from __future__ import annotations

import json
import stat
from typing import Any

from conftest import Env, S3Bucket
from test_cli import cli


def _dead_letters(env: Env) -> None:
    """A BLOB-keyed row with an infinite REAL, a row with -inf, and a dead letter whose row is gone."""
    env.table("b", "CREATE TABLE b (k BLOB PRIMARY KEY, r REAL)")
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, r REAL)")
    cli(env, "init", check=True)
    env.sql("INSERT INTO b VALUES (X'00FF10', 9e999)",
            "INSERT INTO t VALUES (1, 'ok', 0.5), (2, 'minus', -9e999), (3, 'gone', 9e999)")
    assert "3 dead letter(s)" in cli(env, "sync", check=True).stdout
    env.sql("DELETE FROM t WHERE id = 3")  # its dead letter stays until the next pass


def _check_lines(env: Env, lines: list[dict[str, Any]]) -> None:
    by_key = {(d["table"], json.dumps(d["key"])): d for d in lines}
    assert len(lines) == 3 and {d["database"] for d in lines} == {str(env.db_path)}
    assert by_key[("b", '{"k": {"base64": "AP8Q"}}')]["row"] == {"k": {"base64": "AP8Q"}, "r": "Infinity"}
    assert by_key[("t", '{"id": 2}')]["row"] == {"id": 2, "name": "minus", "r": "-Infinity"}
    gone = by_key[("t", '{"id": 3}')]
    assert gone["row"] is None and gone["kind"] == "unstorable" and "finite" in gone["reason"]
    assert gone["attempts"] == 1 and isinstance(gone["first_failed"], float)


def test_export_to_a_file_writes_json_lines_readable_only_by_its_owner(env: Env) -> None:
    _dead_letters(env)
    out = env.dir / "exports" / "dead.jsonl"
    out.parent.mkdir()
    p = cli(env, "dead-letters", "--export", str(out), check=True)
    assert p.stdout.splitlines() == [f"dead-letters: exported 3 dead letter(s) to {out}"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    _check_lines(env, [json.loads(line) for line in out.read_text("utf-8").splitlines()])
    assert [f.name for f in out.parent.iterdir()] == ["dead.jsonl"]


def test_export_to_s3_uploads_one_object_under_the_prefix(env: Env, s3: S3Bucket) -> None:
    env.write_config(s3={"endpoint_url": s3.endpoint})
    _dead_letters(env)
    p = cli(env, "dead-letters", "--export", f"s3://{s3.bucket}/exports/", check=True)
    ((key,),) = [tuple(s3.keys())]
    assert key.startswith("exports/dead-letters-") and key.endswith(".jsonl")
    assert p.stdout.splitlines() == [f"dead-letters: exported 3 dead letter(s) to s3://{s3.bucket}/{key}"]
    body = s3.body(s3.bucket, key).decode("utf-8")
    _check_lines(env, [json.loads(line) for line in body.splitlines()])


def test_an_export_to_a_missing_bucket_fails_and_names_it(env: Env, s3: S3Bucket) -> None:
    env.write_config(s3={"endpoint_url": s3.endpoint})
    _dead_letters(env)
    p = cli(env, "dead-letters", "--export", "s3://no-such-bucket-here/x.jsonl")
    assert p.returncode == 1 and "s3://no-such-bucket-here/x.jsonl" in p.stderr, p.stderr
