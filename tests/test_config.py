from __future__ import annotations

from pathlib import Path

import pytest

from dynasync import config
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
        (MINIMAL + "[sync]\nintervall = 1\n", "unknown key 'intervall'"),
        (MINIMAL + "[sync]\nwatch = 1\n", "watch must be true or false"),
        (MINIMAL + "[dynamodb]\nmax_concurrency = 'x'\n", "must be an integer"),
        (MINIMAL + "[bogus]\n", r"unknown section \[bogus\]"),
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
