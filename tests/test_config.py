from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from dynasync import config, configcheck
from dynasync.exceptions import ConfigError

MINIMAL = '[source]\ndatabase = "app.db"\n[[tables]]\nsource = "users"\ntarget = "app-users"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_and_relative_database(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.database == tmp_path / "app.db"
    assert cfg.sync.interval == 5.0 and cfg.sync.watch is True
    assert cfg.dynamodb.create_tables is False and cfg.dynamodb.region is None
    assert cfg.tables == (config.TableConfig("users", "app-users"),)


def test_example_config_parses_and_matches_defaults() -> None:
    cfg = config.load(Path(__file__).parent.parent / "config.example.toml")
    for section, defaults in config.DEFAULTS.items():
        for key, default in defaults.items():
            if default is not None:
                assert getattr(getattr(cfg, section), key) == default, (section, key)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.resolve_path(None) == Path("dynasync.toml")
    monkeypatch.setenv("DYNASYNC_CONFIG", "/etc/x.toml")
    assert config.resolve_path(None) == Path("/etc/x.toml")
    assert config.resolve_path("mine.toml") == Path("mine.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "[sync]\ninterval = -1\n", r"\[sync\] interval must be positive"),
        (MINIMAL + "[sync]\nintervall = 1\n", r"c.toml:7: \[sync\] intervall is not a known key"),
        (MINIMAL + "[sync]\nwatch = 1\n", "watch must be true or false"),
        (MINIMAL + "[dynamodb]\nmax_concurrency = 'x'\n", "must be an integer"),
        (MINIMAL + "[bogus]\n", r"\[bogus\]: unknown section"),
        ('[source]\ndatabase = "a.db"\n', r"no \[\[tables\]\]"),
        ("[[tables]]\nsource='a'\ntarget='b'\n", "database must be set"),
        (MINIMAL + '[[tables]]\nsource = "USERS"\ntarget = "xyz"\n', "configured twice"),
        ('[source]\ndatabase="a"\n[[tables]]\nsource="_dynasync_changelog"\ntarget="xyz"\n', "internal table"),
        ('[source]\ndatabase="a"\n[[tables]]\nsource="t"\n', "target must be"),
        ("not toml [", "invalid TOML"),
        ('[source]\ndatabase="a"\n[[tables]]\nsource="t"\ntarget="a b"\n', "not a valid DynamoDB table name"),
    ],
)
def test_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_check_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[source]\ndatabase = "missing.db"\n\n[sync]\ninterval = 0\nwatch = "yes"\n'
                        '[dynamodb]\nmax_concurrency = 0\n\n[[tables]]\nsource = "a"\ntarget = "ok-table"\n'
                        '[[tables]]\nsource = "b"\ntarget = "no"\n')
    _, problems = configcheck.check(p)
    assert problems == [
        f"{p}:6: [sync] watch must be true or false",
        f"{p}:8: [dynamodb] max_concurrency must be at least 1",
        f"{p}:5: [sync] interval must be positive",
        f"{p}:15: [tables 2] target 'no' is not a valid DynamoDB table name (3-255 characters: "
        "a-z, A-Z, 0-9, '_', '-', '.')",
    ]
    with pytest.raises(ConfigError, match=r"\(and 3 more: run 'dynasync config check'\)"):
        config.load(p)


def test_check_of_a_valid_file_notes_a_missing_database(tmp_path: Path) -> None:
    _, notes = configcheck.check(write(tmp_path, MINIMAL))
    assert notes == [f"{tmp_path / 'c.toml'}: [source] database {tmp_path / 'app.db'} does not exist"]
    (tmp_path / "app.db").touch()
    # With the database there, check looks at the tables too.
    assert "[tables 1] source table 'users' does not exist" in configcheck.check(tmp_path / "c.toml")[1][0]
    sqlite3.connect(tmp_path / "app.db").execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    assert configcheck.check(tmp_path / "c.toml")[1] == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('partition_key = { name = "PK", template = "U#{}" }', "[tables 1] partition_key template 'U#{}' has an empty"),
        ('partition_key = { name = "PK", template = "U#{id:>5}" }', "placeholders take no format spec"),
        ('partition_key = { name = "PK", template = "U#{id" }', "does not parse"),
        ('partition_key = { name = "PK", template = "{id}-{id}" }', "names {id} twice"),
        ('partition_key = { name = "K", template = "{a}" }\nsort_key = { name = "K", template = "{b}" }',
         "[tables 1] sort_key partition and sort key need different names"),
        ('partition_key = { name = "PK", template = "{a}" }\nconstants = { PK = "x" }',
         "[tables 1] constants constant 'PK' would overwrite the partition_key"),
    ],
)
def test_config_check_reports_template_problems_without_a_database(tmp_path: Path, entry: str, message: str) -> None:
    # The database does not exist: these are found by parsing alone.
    _, problems = configcheck.check(write(tmp_path, MINIMAL + entry + "\n"))
    found = [p for p in problems if message in p]
    assert found and re.search(r"c\.toml:[67]: ", found[0]), problems


def test_defaults_come_from_the_section_dataclasses() -> None:
    assert config.DEFAULTS["dynamodb"]["max_concurrency"] == config.DynamoConfig().max_concurrency == 4
    assert config.DEFAULTS["sync"]["batch_size"] == config.SyncConfig().batch_size == 5000
    assert set(config.DEFAULTS) == {"dynamodb", "sync", "backfill", "metrics", "verify", "s3"}
