"""A fleet: `[source] databases = "/var/lib/app/tenants/*.db"`, every matching
file a database synced as one database is, with its own capture, changelog,
state and dead letters inside it. `{database}` (the file's name without its
extension) may appear in targets, key and attribute templates and constants.

Commands run on every database of the fleet in turn, or on one (`--database`);
`status` sums the fleet up.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynasync.config import DATABASE_PLACEHOLDER, Config
from dynasync.exceptions import ConfigError
from dynasync.status import Status

# SQLite's own files beside a database: never databases themselves.
SIDE_FILES = ("-wal", "-shm", "-journal")


def members(cfg: Config) -> list[Path]:
    """The database files the fleet's glob matches now, in name order. A file
    whose real path lies outside the glob's directory (through a symlink planted
    in it) is none: dynasync would install triggers in it and export its rows."""
    if cfg.databases is None:
        return [cfg.database]
    base = os.path.realpath(root(cfg.databases)[0])
    found = (Path(p) for p in glob.glob(cfg.databases))
    return sorted(p for p in found if p.is_file() and not p.name.endswith(SIDE_FILES) and _inside(p, base))


def _inside(path: Path, base: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([real, base]) == base


def root(pattern: str) -> tuple[Path, bool]:
    """The directory of a glob (or of one database's path), and whether the glob
    reaches into its subdirectories (a wildcard in a directory part)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            return Path(*fixed), True
        fixed.append(part)
    return Path(*fixed) if fixed else Path("."), False


def clashes(cfg: Config, databases: Sequence[Path]) -> dict[Path, str]:
    """The databases refused because `{database}` would name another one too (`a.db`
    and `a.sqlite`, or every `tenants/*/app.db`), with why: their items would mix."""
    if cfg.databases is None or DATABASE_PLACEHOLDER not in json.dumps(cfg.raw.get("tables")):
        return {}
    by_name: dict[str, list[Path]] = {}
    for d in databases:
        by_name.setdefault(name_of(d), []).append(d)
    out: dict[Path, str] = {}
    for name, group in by_name.items():
        if len(group) > 1:
            paths = ", ".join(str(p) for p in sorted(group))
            for d in group:
                out[d] = (f"{{database}} is {name!r} for {len(group)} databases ({paths}), whose items "
                          "would mix: rename the files so each name (the file name without its extension) "
                          "is unique")
    return out


def name_of(database: Path) -> str:
    """What `{database}` stands for: the file's name without its extension."""
    return database.stem


def select(cfg: Config, only: str | None) -> list[Path]:
    """The databases a command runs on: the fleet's (or the config's one), or just `only`."""
    databases = members(cfg)
    if only is None:
        return databases
    want = Path(only).resolve()
    for d in databases:
        if d.resolve() == want:
            return [d]
    where = f"[source] databases {cfg.databases!r}" if cfg.databases else f"[source] database {cfg.database}"
    raise ConfigError(f"--database {only} is not a database of this config ({where})")


def configs(cfg: Config, only: str | None = None) -> Iterator[tuple[Path, Config | ConfigError]]:
    """Each selected database with its own config, or why its config is invalid."""
    refused = clashes(cfg, members(cfg))
    for database in select(cfg, only):
        if cfg.databases is None:
            yield database, cfg
            continue
        if database in refused:
            yield database, ConfigError(refused[database])
            continue
        try:
            yield database, cfg.for_database(database)
        except ConfigError as e:
            yield database, e


@dataclass
class Summary:
    """A fleet's health at a glance, and each database's status."""

    databases: int = 0
    healthy: int = 0
    behind: int = 0  # a warning: pending changes, dead letters, no daemon
    failing: int = 0  # critical, or its status could not be read
    worst_lag_seconds: float | None = 0.0
    worst_lag_database: str | None = None
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """As `status --check` exits: 2 if any database is failing, 1 if any is behind."""
        return 2 if self.failing else 1 if self.behind else 0

    def add(self, database: Path, result: Status | Exception) -> None:
        """Count one database's status in."""
        self.databases += 1
        if isinstance(result, Exception):
            self.failing += 1
            self.errors[str(database)] = str(result)
            return
        self.statuses[str(database)] = result.to_json()
        if result.exit_code >= 2:
            self.failing += 1
        elif result.exit_code == 1:
            self.behind += 1
        else:
            self.healthy += 1
        lag = result.lag_seconds if result.lag_seconds is not None else float("inf")
        worst = self.worst_lag_seconds if self.worst_lag_seconds is not None else float("inf")
        if result.pending_changes and (self.worst_lag_database is None or lag > worst):
            self.worst_lag_seconds, self.worst_lag_database = result.lag_seconds, str(database)

    def to_json(self) -> dict[str, Any]:
        """`status --json` for a fleet: the summary, and every database's status."""
        return {
            "databases": self.databases, "healthy": self.healthy, "behind": self.behind,
            "failing": self.failing, "worst_lag_seconds": self.worst_lag_seconds,
            "worst_lag_database": self.worst_lag_database, "exit_code": self.exit_code,
            "per_database": self.statuses, "errors": self.errors,
        }


def summarize(cfg: Config, status_of: Callable[[Config], Status], only: str | None = None) -> Summary:
    """Every selected database's status, summed up."""
    summary = Summary()
    for database, member in configs(cfg, only):
        try:
            if isinstance(member, Exception):
                raise member
            summary.add(database, status_of(member))
        except Exception as e:  # one unreadable database is a failing one, not a failed command
            summary.add(database, e)
    return summary
