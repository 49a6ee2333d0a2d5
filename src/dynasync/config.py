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
    "metrics": {
        # "host:port" to serve Prometheus metrics on /metrics while `run` runs; off when unset.
        "listen": None,
    },
}

# The keys of a [[tables]] entry, with what each holds.
TABLE_KEYS = {
    "source": "SQLite table",
    "target": "DynamoDB table",
    "columns": "list of columns to write (default: all)",
    "exclude_columns": "list of columns never to write",
    "rename": "{ sqlite_column = \"attributeName\" }",
    "json_columns": "TEXT columns holding JSON, written as maps and lists",
    "partition_key": "{ name = \"PK\", template = \"USER#{id}\" }",
    "sort_key": "{ name = \"SK\", template = \"PROFILE\" }",
    "constants": "{ attribute = value } written on every item",
    "ttl_column": "INTEGER/REAL epoch-seconds column written as the TTL attribute",
}

CONFIG_ENV = "DYNASYNC_CONFIG"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
DEFAULT_CONFIG_NAME = "dynasync.toml"


@dataclass(frozen=True)
class KeyTemplate:
    name: str  # the DynamoDB attribute
    template: str  # "USER#{id}": {column} placeholders name primary-key columns


@dataclass(frozen=True)
class TableConfig:
    source: str
    target: str
    # Mapping options, all optional; see TABLE_KEYS.
    columns: tuple[str, ...] | None = None
    exclude_columns: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    json_columns: tuple[str, ...] = ()
    partition_key: KeyTemplate | None = None
    sort_key: KeyTemplate | None = None
    constants: tuple[tuple[str, Any], ...] = ()
    ttl_column: str | None = None


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
class MetricsConfig:
    listen: str | None


@dataclass(frozen=True)
class Config:
    database: Path
    dynamodb: DynamoConfig
    sync: SyncConfig
    backfill: BackfillConfig
    tables: tuple[TableConfig, ...]
    metrics: MetricsConfig = MetricsConfig(None)
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


class Problems:
    """Every problem found in a config file, each with where it is: the file,
    the line when it can be found, and the [section] key."""

    def __init__(self, where: str, text: str | None = None) -> None:
        self.where = where
        self.items: list[str] = []
        self._lines = _index_lines(text) if text else {}

    def add(self, section: str, key: str | None, message: str) -> None:
        line = self._lines.get((section, key)) or self._lines.get((section, None))
        loc = f"{self.where}:{line}" if line else self.where
        label = f"[{section}] {key}" if key else f"[{section}]"
        self.items.append(f"{loc}: {label} {message}" if key else f"{loc}: {label}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            extra = len(self.items) - 1
            more = f" (and {extra} more: run 'dynasync config check')" if extra else ""
            raise ConfigError(self.items[0] + more, problems=self.items)


def _index_lines(text: str) -> dict[tuple[str, str | None], int]:
    """(section, key) -> line number; [[tables]] entries are "tables N"."""
    index: dict[tuple[str, str | None], int] = {}
    section, entries = "", 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", line) or re.match(r"^\[\s*([^\]]+?)\s*\]", line)
        if m:
            section = m.group(1)
            if line.startswith("[["):
                entries += 1
                section = f"{section} {entries}"
            index.setdefault((section, None), n)
            continue
        k = re.match(r"^([A-Za-z0-9_\-]+)\s*=", line)
        if k:
            index.setdefault((section, k.group(1)), n)
    return index


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = resolve_path(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse(data, path, text)


def parse(data: dict[str, Any], path: Path | None = None, text: str | None = None) -> Config:
    problems = Problems(str(path) if path else "config", text)
    for key in data:
        if key not in ("source", "dynamodb", "sync", "backfill", "metrics", "tables"):
            problems.add(key, None, "unknown section")

    source = _section(data, "source", problems)
    _no_unknown(source, {"database"}, "source", problems)
    database = source.get("database")
    db_path = Path()
    if not isinstance(database, str) or not database:
        problems.add("source", "database", "must be set to the SQLite database path")
    else:
        db_path = Path(database).expanduser()
        if not db_path.is_absolute() and path is not None:
            db_path = path.parent / db_path

    dynamodb = _typed_section(data, "dynamodb", problems)
    sync = _typed_section(data, "sync", problems)
    backfill = _typed_section(data, "backfill", problems)
    metrics = _typed_section(data, "metrics", problems)
    listen = metrics["listen"]
    if listen is not None and not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]*):\d{1,5}", listen):
        problems.add("metrics", "listen", f"must be host:port, such as 127.0.0.1:9464 (got {listen!r})")
    checks = [
        ("dynamodb", "max_concurrency", dynamodb["max_concurrency"] >= 1, "must be at least 1"),
        ("sync", "batch_size", sync["batch_size"] >= 1, "must be at least 1"),
        ("sync", "debounce", sync["debounce"] >= 0, "must not be negative"),
        ("backfill", "chunk_size", backfill["chunk_size"] >= 1, "must be at least 1"),
    ]
    checks += [("dynamodb", k, dynamodb[k] > 0, "must be positive")
               for k in ("max_retry_time", "connect_timeout", "read_timeout")]
    checks += [("sync", k, sync[k] > 0, "must be positive")
               for k in ("interval", "backoff_initial", "backoff_max")]
    for section, key, ok, message in checks:
        if not ok:
            problems.add(section, key, message)

    tables = _tables(data.get("tables"), problems)
    problems.raise_if_any()
    return Config(
        database=db_path,
        dynamodb=DynamoConfig(**dynamodb),
        sync=SyncConfig(**sync),
        backfill=BackfillConfig(**backfill),
        tables=tables,
        metrics=MetricsConfig(**metrics),
        path=path,
    )


def _section(data: dict[str, Any], name: str, problems: Problems) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        problems.add(name, None, "must be a table")
        return {}
    return value


def _no_unknown(section: dict[str, Any], allowed: set[str], name: str, problems: Problems) -> None:
    for key in section:
        if key not in allowed:
            problems.add(name, key, "is not a known key")


def _typed_section(data: dict[str, Any], name: str, problems: Problems) -> dict[str, Any]:
    section = _section(data, name, problems)
    defaults = DEFAULTS[name]
    _no_unknown(section, set(defaults), name, problems)
    result = dict(defaults)
    for key, value in section.items():
        if key not in defaults:
            continue
        default = defaults[key]
        if default is None:
            ok, want = isinstance(value, str), "a string"
        elif isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
        else:
            ok, want = isinstance(value, int | float) and not isinstance(value, bool), "a number"
            value = float(value) if ok else value
        if ok:
            result[key] = value
        else:
            problems.add(name, key, f"must be {want}")
    return result


def _tables(value: Any, problems: Problems) -> tuple[TableConfig, ...]:
    if value is None:
        problems.add("tables", None, "no [[tables]] configured")
        return ()
    if not isinstance(value, list) or not value:
        problems.add("tables", None, "[[tables]] must be a non-empty array of tables")
        return ()
    tables: list[TableConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(value, start=1):
        name = f"tables {i}"
        if not isinstance(entry, dict):
            problems.add(name, None, "must be a table")
            continue
        _no_unknown(entry, set(TABLE_KEYS), name, problems)
        source, target = entry.get("source"), entry.get("target")
        if not isinstance(source, str) or not source:
            problems.add(name, "source", "must be the SQLite table name")
            continue
        if not isinstance(target, str) or not target:
            problems.add(name, "target", "must be the DynamoDB table name")
            continue
        if not _TABLE_NAME.fullmatch(target):
            problems.add(name, "target", f"{target!r} is not a valid DynamoDB table name (3-255 characters: "
                                         "a-z, A-Z, 0-9, '_', '-', '.')")
        lowered = source.lower()
        if "\x00" in source:
            problems.add(name, "source", "contains a NUL character")
        elif lowered.startswith(("_dynasync_", "sqlite_")):
            problems.add(name, "source", f"{source!r} is an internal table and cannot be synced")
        elif lowered in seen:
            problems.add(name, "source", f"table {source!r} is configured twice")
        seen.add(lowered)
        tables.append(TableConfig(source=source, target=target, **_mapping_options(entry, name, problems)))
    return tuple(tables)


def _names(entry: dict[str, Any], key: str, section: str, problems: Problems) -> tuple[str, ...] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.add(section, key, "must be a list of column names")
        return None
    return tuple(value)


def _template(entry: dict[str, Any], key: str, section: str, problems: Problems) -> KeyTemplate | None:
    value = entry.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"name", "template"}
        or not all(isinstance(v, str) and v for v in value.values())
    ):
        problems.add(section, key, 'must be { name = "PK", template = "PREFIX#{column}" }')
        return None
    return KeyTemplate(value["name"], value["template"])


def _mapping_options(entry: dict[str, Any], section: str, problems: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {
        "columns": _names(entry, "columns", section, problems),
        "exclude_columns": _names(entry, "exclude_columns", section, problems) or (),
        "json_columns": _names(entry, "json_columns", section, problems) or (),
        "partition_key": _template(entry, "partition_key", section, problems),
        "sort_key": _template(entry, "sort_key", section, problems),
    }
    rename = entry.get("rename", {})
    if not isinstance(rename, dict) or not all(isinstance(v, str) and v for v in rename.values()):
        problems.add(section, "rename", 'must be { sqlite_column = "attributeName" }')
        rename = {}
    out["rename"] = tuple(rename.items())
    constants = entry.get("constants", {})
    if not isinstance(constants, dict) or not all(
        isinstance(v, str | int | float | bool) for v in constants.values()
    ):
        problems.add(section, "constants", "must map attribute names to strings, numbers or booleans")
        constants = {}
    out["constants"] = tuple(constants.items())
    ttl = entry.get("ttl_column")
    if ttl is not None and (not isinstance(ttl, str) or not ttl):
        problems.add(section, "ttl_column", "must be a column name")
        ttl = None
    out["ttl_column"] = ttl
    if out["sort_key"] is not None and out["partition_key"] is None:
        problems.add(section, "sort_key", "needs a partition_key template too")
    return out


def check(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, list[str]]:
    """`dynasync config check`: every problem in the file, not just the first."""
    path = resolve_path(explicit)
    try:
        cfg = load(path)
    except ConfigError as e:
        return path, e.problems
    notes = []
    if not cfg.database.exists():
        notes.append(f"{path}: [source] database {cfg.database} does not exist")
    return path, notes
