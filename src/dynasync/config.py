"""Load and validate the TOML config file.

Each section is a frozen dataclass whose fields carry their defaults and
checks, so one place says what dynasync does when a key is left out. Every
check that needs no database (types, ranges, key template syntax, attribute
names) runs here, so `dynasync config check` reports all of them at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynasync.exceptions import ConfigError
from dynasync.problems import Problems
from dynasync.tableconfig import TABLE_KEYS, TableConfig, parse_tables

__all__ = ["TABLE_KEYS", "Config", "TableConfig", "load", "parse"]

CONFIG_ENV = "DYNASYNC_CONFIG"
DEFAULT_CONFIG_NAME = "dynasync.toml"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_LISTEN = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]*):\d{1,5}")

Check = tuple[Callable[[Any], bool], str]


def _check(test: Callable[[Any], bool], message: str, default: Any) -> Any:
    return field(default=default, metadata={"check": (test, message)})


def _at_least_1(default: int) -> Any:
    return _check(lambda v: v >= 1, "must be at least 1", default)


def _positive(default: float) -> Any:
    return _check(lambda v: v > 0, "must be positive", default)


@dataclass(frozen=True)
class DynamoConfig:
    """[dynamodb]: where DynamoDB is and how hard dynasync drives it."""

    region: str | None = None
    endpoint_url: str | None = None
    create_tables: bool = False
    # Concurrent BatchWriteItem requests. One pass never holds two writes for
    # one key, so requests of one pass can run in parallel without reordering.
    max_concurrency: int = _at_least_1(4)
    # How long one request keeps retrying retryable errors before the pass fails.
    max_retry_time: float = _positive(60.0)
    connect_timeout: float = _positive(5.0)
    read_timeout: float = _positive(20.0)
    # Write capacity units per second, summed over every table this process
    # writes (one per started KB of an item; a delete is one). None: unlimited.
    max_write_rate: float | None = _check(lambda v: v is None or v > 0, "must be positive", None)


@dataclass(frozen=True)
class SyncConfig:
    """[sync]: when passes run and how much each reads at once."""

    interval: float = _positive(5.0)
    watch: bool = True
    # Changelog rows read per read transaction: bounds memory and the length
    # of every read transaction.
    batch_size: int = _at_least_1(5000)
    # Wait after a file change so a burst of commits becomes one pass.
    debounce: float = _check(lambda v: v >= 0, "must not be negative", 0.05)
    # The daemon's retry backoff after a failed pass, capped.
    backoff_initial: float = _positive(1.0)
    backoff_max: float = _positive(60.0)


@dataclass(frozen=True)
class BackfillConfig:
    """[backfill]: how backfill reads the source tables."""

    chunk_size: int = _at_least_1(1000)
    # A separate budget for backfill and verify --repair, so a copy runs gently
    # beside live sync. None: unlimited.
    max_write_rate: float | None = _check(lambda v: v is None or v > 0, "must be positive", None)


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: the Prometheus endpoint of `dynasync run`."""

    # "host:port" to serve /metrics on while `run` runs; off when unset.
    listen: str | None = _check(
        lambda v: v is None or bool(_LISTEN.fullmatch(v)), "must be host:port, such as 127.0.0.1:9464", None
    )


@dataclass(frozen=True)
class VerifyConfig:
    """[verify]: the daemon's continuous verification, a safety net for what nobody foresaw."""

    # Rows (and then items) per second `run` compares with DynamoDB, in a rolling
    # cycle over every table; None: off.
    rows_per_second: float | None = _check(lambda v: v is None or v > 0, "must be positive", None)


@dataclass(frozen=True)
class S3Config:
    """[s3]: where the `s3` oversize policy puts the attributes of oversized items."""

    bucket: str | None = _check(lambda v: v is None or bool(_BUCKET.fullmatch(v)),
                                "must be an S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')", None)
    # Keys of the objects start with it; the IAM policy scopes dynasync to it.
    prefix: str = "dynasync/"
    endpoint_url: str | None = None  # default: AWS_ENDPOINT_URL_S3, then AWS
    region: str | None = None  # default: [dynamodb] region, then the AWS environment
    # S3 requests in flight at once, apart from DynamoDB's max_concurrency.
    max_concurrency: int = _at_least_1(4)


SECTIONS: dict[str, type] = {
    "dynamodb": DynamoConfig,
    "sync": SyncConfig,
    "backfill": BackfillConfig,
    "metrics": MetricsConfig,
    "verify": VerifyConfig,
    "s3": S3Config,
}
# Each section's keys with their defaults, derived from the dataclasses above.
DEFAULTS: dict[str, dict[str, Any]] = {
    name: {f.name: f.default for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()
}

@dataclass(frozen=True)
class Config:
    """The whole config file, validated."""

    database: Path  # a fleet's config has none of its own: see for_database()
    tables: tuple[TableConfig, ...]
    dynamodb: DynamoConfig = DynamoConfig()
    sync: SyncConfig = SyncConfig()
    backfill: BackfillConfig = BackfillConfig()
    metrics: MetricsConfig = MetricsConfig()
    verify: VerifyConfig = VerifyConfig()
    s3: S3Config = S3Config()
    path: Path | None = field(default=None, compare=False)
    # [source] databases: a glob of database files, each synced as one database is.
    databases: str | None = None
    fleet: bool = False  # this config is one database's, made from a fleet's by for_database()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    text: str | None = field(default=None, compare=False, repr=False)

    def for_database(self, database: Path) -> Config:
        """One database of a fleet: its config, with `{database}` (the file's name
        without its extension) filled in; ConfigError when that makes it invalid."""
        return parse(self.raw, self.path, self.text, member=database)

    def table(self, source: str) -> TableConfig:
        """The entry for a source table; ConfigError names the configured ones."""
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
    """Read and validate the config file; ConfigError lists every problem."""
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


def parse(
    data: dict[str, Any], path: Path | None = None, text: str | None = None, member: Path | None = None
) -> Config:
    """Validate parsed TOML; ConfigError lists every problem. `member`: one
    database of a fleet (a [source] databases glob), whose config to make."""
    where = f"{path} for {member}" if member is not None else str(path) if path else "config"
    problems = Problems(where, text)
    for key in data:
        if key not in ("source", "tables", *SECTIONS):
            problems.add(key, None, "unknown section")
    database, databases = _database(data, path, problems)
    # Type problems first, then range problems, each in section order.
    typed = {name: _typed_section(data, name, cls, problems) for name, cls in SECTIONS.items()}
    sections = {name: _checked(name, cls, typed[name], problems) for name, cls in SECTIONS.items()}
    entries = data.get("tables")
    if databases is not None or member is not None:
        # A fleet's tables are checked as a database named "example" would have them.
        entries = fill_database(entries, member.stem if member is not None else "example")
    tables = parse_tables(entries, problems)
    if sections["s3"].bucket is None:
        for t in tables:
            if t.oversize == "s3":
                problems.add(t.section, "oversize", '"s3" needs [s3] bucket')
    problems.raise_if_any()
    if member is not None:
        database, databases = member, None
    return Config(database=database, tables=tables, path=path, databases=databases, fleet=member is not None,
                  raw=data, text=text, **sections)


DATABASE_PLACEHOLDER = "{database}"


def fill_database(entries: Any, name: str) -> Any:
    """[[tables]] entries with `{database}` replaced by a database's name in
    `target`, the key and attribute templates, and string constants."""
    if not isinstance(entries, list):
        return entries
    literal = name.replace("{", "{{").replace("}", "}}")  # in a template, braces are syntax

    def fill(value: Any, text: str) -> Any:
        return value.replace(DATABASE_PLACEHOLDER, text) if isinstance(value, str) else value

    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            out.append(entry)
            continue
        e = dict(entry)
        e["target"] = fill(e.get("target"), name)
        for key in ("partition_key", "sort_key"):
            if isinstance(e.get(key), dict):
                e[key] = {**e[key], "template": fill(e[key].get("template"), literal)}
        if isinstance(e.get("attributes"), dict):
            e["attributes"] = {k: fill(v, literal) for k, v in e["attributes"].items()}
        if isinstance(e.get("constants"), dict):
            e["constants"] = {k: fill(v, name) for k, v in e["constants"].items()}
        out.append({k: v for k, v in e.items() if v is not None or k in entry})
    return out


def _database(data: dict[str, Any], path: Path | None, problems: Problems) -> tuple[Path, str | None]:
    """[source]: one `database`, or a glob of them (`databases`)."""
    source = _section(data, "source", problems)
    _no_unknown(source, {"database", "databases"}, "source", problems)
    database, databases = source.get("database"), source.get("databases")
    if database is not None and databases is not None:
        problems.add("source", "databases", "cannot be set together with database")
        return Path(), None
    if databases is not None:
        if not isinstance(databases, str) or not databases:
            problems.add("source", "databases", 'must be a glob of database files, like "/srv/app/*.db"')
            return Path(), None
        return Path(), str(_absolute(databases, path))
    if not isinstance(database, str) or not database:
        problems.add("source", "database", "must be set to the SQLite database path (or use databases)")
        return Path(), None
    return _absolute(database, path), None


def _absolute(value: str, path: Path | None) -> Path:
    """A path from the config, relative to the config file's directory."""
    p = Path(value).expanduser()
    return path.parent / p if not p.is_absolute() and path is not None else p


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


def _typed_section(data: dict[str, Any], name: str, cls: type, problems: Problems) -> dict[str, Any]:
    """The keys of one section whose values have their field's type."""
    section = _section(data, name, problems)
    hints = typing.get_type_hints(cls)
    _no_unknown(section, set(hints), name, problems)
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in hints:
            continue
        ok, want, value = _typed(value, hints[key])
        if ok:
            values[key] = value
        else:
            problems.add(name, key, f"must be {want}")
    return values


def _checked(name: str, cls: type, values: dict[str, Any], problems: Problems) -> Any:
    """The section's dataclass, from the values that pass their field's own check."""
    for f in dataclasses.fields(cls):
        check: Check | None = f.metadata.get("check")
        if f.name in values and check is not None and not check[0](values[f.name]):
            value = values.pop(f.name)
            problems.add(name, f.name, f"{check[1]} (got {value!r})" if isinstance(value, str) else check[1])
    return cls(**values)


def _typed(value: Any, hint: Any) -> tuple[bool, str, Any]:
    """(ok, what was wanted, the value as the field's type)."""
    kinds = set(typing.get_args(hint)) or {hint}
    if bool in kinds:
        return isinstance(value, bool), "true or false", value
    if isinstance(value, bool):
        return False, "a number" if float in kinds else "an integer" if int in kinds else "a string", value
    if int in kinds:
        return isinstance(value, int), "an integer", value
    if float in kinds:
        ok = isinstance(value, int | float)
        return ok, "a number", float(value) if ok else value
    return isinstance(value, str), "a string", value
