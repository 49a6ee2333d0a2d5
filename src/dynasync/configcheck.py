"""`dynasync config check`: every problem of the config file, then, once the
file itself is valid, every mapping and filter problem of its tables against
each database it names. It sits above `config`, which reads and validates
the file alone."""

from __future__ import annotations

import os
from pathlib import Path

from dynasync import config, fleet, tables
from dynasync.config import Config
from dynasync.exceptions import ConfigError, DynasyncError
from dynasync.problems import Problems


def check(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, list[str]]:
    """Every problem in the file and its tables, not just the first; (the file's path, the problems)."""
    path = config.resolve_path(explicit)
    try:
        cfg = config.load(path)
    except ConfigError as e:
        return path, e.problems
    if cfg.databases is not None:
        out: list[str] = []
        for member in fleet.members(cfg):
            try:
                out.extend(_check_database(cfg.for_database(member), path))
            except ConfigError as e:
                out.extend(e.problems)
        return path, out
    if not cfg.database.exists():
        return path, [f"{path}: [source] database {cfg.database} does not exist"]
    return path, _check_database(cfg, path)


def _check_database(cfg: Config, path: Path) -> list[str]:
    """The mapping problems of a config against its database's tables."""
    where = f"{path} for {cfg.database}" if cfg.fleet else str(path)
    problems = Problems(where, path.read_text(encoding="utf-8"))
    try:
        found = tables.check_mappings(cfg)
    except DynasyncError as e:
        return [f"{where}: [source] database {cfg.database}: {e}"]
    for section, key, message in found:
        problems.add(section, key, message)
    return problems.items
