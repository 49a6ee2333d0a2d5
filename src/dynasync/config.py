"""Load and validate the TOML config file.

Every tunable and its default lives in DEFAULTS below, so there is one place to
read what dynasync does when a key is left out.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynasync.exceptions import ConfigError

DEFAULTS: dict[str, dict[str, Any]] = {
    "dynamodb": {
        "region": None,
        "endpoint_url": None,
        "create_tables": False,
        # Concurrent BatchWriteItem requests. One pass never holds two writes for
        # one key, so requests of one pass can run in parallel without reordering.
        "max_concurrency": 4,
        # How long one batch keeps retrying retryable errors before the pass fails.
        "max_retry_time": 60.0,
        "connect_timeout": 5.0,
        "read_timeout": 20.0,
    },
    "sync": {
        "interval": 5.0,
        "watch": True,
        # Changelog rows read per read transaction: bounds memory and the
        # length of every read transaction.
        "batch_size": 5000,
        # Wait after a file change so a burst of commits becomes one pass.
        "debounce": 0.05,
        # The daemon's retry backoff after a failed pass, capped.
        "backoff_initial": 1.0,
        "backoff_max": 60.0,
    },
    "backfill": {
        "chunk_size": 1000,
    },
}

CONFIG_ENV = "DYNASYNC_CONFIG"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
DEFAULT_CONFIG_NAME = "dynasync.toml"


@dataclass(frozen=True)
class TableConfig:
    source: str
    target: str


@dataclass(frozen=True)
class DynamoConfig:
    region: str | None
    endpoint_url: str | None
    create_tables: bool
    max_concurrency: int
    max_retry_time: float
    connect_timeout: float
    read_timeout: float


@dataclass(frozen=True)
class SyncConfig:
    interval: float
    watch: bool
    batch_size: int
    debounce: float
    backoff_initial: float
    backoff_max: float


@dataclass(frozen=True)
class BackfillConfig:
    chunk_size: int


@dataclass(frozen=True)
class Config:
    database: Path
    dynamodb: DynamoConfig
    sync: SyncConfig
    backfill: BackfillConfig
    tables: tuple[TableConfig, ...]
    path: Path | None = field(default=None, compare=False)

    def table(self, source: str) -> TableConfig:
        for t in self.tables:
            if t.source == source:
                return t
        names = ", ".join(t.source for t in self.tables)
        raise ConfigError(f"table {source!r} is not configured (configured tables: {names})")


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, then $DYNASYNC_CONFIG, then ./dynasync.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = resolve_path(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "config"
    known = {"source", "dynamodb", "sync", "backfill", "tables"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown section [{key}]")

    source = _section(data, "source", where)
    _no_unknown(source, {"database"}, f"{where}: [source]")
    database = source.get("database")
    if not isinstance(database, str) or not database:
        raise ConfigError(f"{where}: [source] database must be set to the SQLite database path")
    db_path = Path(database).expanduser()
    if not db_path.is_absolute() and path is not None:
        db_path = path.parent / db_path

    dynamodb = _typed_section(data, "dynamodb", where)
    sync = _typed_section(data, "sync", where)
    backfill = _typed_section(data, "backfill", where)

    if dynamodb["max_concurrency"] < 1:
        raise ConfigError(f"{where}: [dynamodb] max_concurrency must be at least 1")
    for key in ("max_retry_time", "connect_timeout", "read_timeout"):
        if dynamodb[key] <= 0:
            raise ConfigError(f"{where}: [dynamodb] {key} must be positive")
    for key in ("interval", "backoff_initial", "backoff_max"):
        if sync[key] <= 0:
            raise ConfigError(f"{where}: [sync] {key} must be positive")
    if sync["debounce"] < 0:
        raise ConfigError(f"{where}: [sync] debounce must not be negative")
    if sync["batch_size"] < 1:
        raise ConfigError(f"{where}: [sync] batch_size must be at least 1")
    if backfill["chunk_size"] < 1:
        raise ConfigError(f"{where}: [backfill] chunk_size must be at least 1")

    tables = _tables(data.get("tables"), where)
    return Config(
        database=db_path,
        dynamodb=DynamoConfig(**dynamodb),
        sync=SyncConfig(**sync),
        backfill=BackfillConfig(**backfill),
        tables=tables,
        path=path,
    )


def _section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    return value


def _no_unknown(section: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}")


def _typed_section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    section = _section(data, name, where)
    defaults = DEFAULTS[name]
    _no_unknown(section, set(defaults), f"{where}: [{name}]")
    result = dict(defaults)
    for key, value in section.items():
        default = defaults[key]
        label = f"{where}: [{name}] {key}"
        if default is None:
            if not isinstance(value, str):
                raise ConfigError(f"{label} must be a string")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{label} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{label} must be an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{label} must be a number")
            value = float(value)
        result[key] = value
    return result


def _tables(value: Any, where: str) -> tuple[TableConfig, ...]:
    if value is None:
        raise ConfigError(f"{where}: no [[tables]] configured")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: [[tables]] must be a non-empty array of tables")
    tables: list[TableConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(value, start=1):
        label = f"{where}: [[tables]] entry {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label} must be a table")
        _no_unknown(entry, {"source", "target"}, label)
        source, target = entry.get("source"), entry.get("target")
        if not isinstance(source, str) or not source:
            raise ConfigError(f"{label}: source must be the SQLite table name")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{label}: target must be the DynamoDB table name")
        if not _TABLE_NAME.fullmatch(target):
            raise ConfigError(
                f"{label}: target {target!r} is not a valid DynamoDB table name (3-255 characters: "
                "a-z, A-Z, 0-9, '_', '-', '.')"
            )
        if "\x00" in source:
            raise ConfigError(f"{label}: source contains a NUL character")
        lowered = source.lower()
        if lowered.startswith("_dynasync_") or lowered.startswith("sqlite_"):
            raise ConfigError(f"{label}: {source!r} is an internal table and cannot be synced")
        if lowered in seen:
            raise ConfigError(f"{label}: table {source!r} is configured twice")
        seen.add(lowered)
        tables.append(TableConfig(source=source, target=target))
    return tuple(tables)
