"""The target tables: each must exist with the key schema its source tables
imply; with `create_tables`, missing ones are created. DescribeTable also
gives each table's identity, which tells a table deleted and created again
apart from the one dynasync wrote before (dynasync.drift restores it)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dynasync.exceptions import KeySchemaError, TableMissingError
from dynasync.logs import fields
from dynasync.retry import RequestStats, Retrier
from dynasync.tables import SyncedTable
from dynasync.target import KeySchema, Target

log = logging.getLogger(__name__)


@dataclass
class TargetCheck:
    """What checking the target tables found."""

    created: list[str] = field(default_factory=list)
    identities: dict[str, str] = field(default_factory=dict)  # target table -> TableInfo.identity


def ensure_targets(
    tables: Iterable[SyncedTable], target: Target, retrier: Retrier, create: bool = False
) -> TargetCheck:
    """Each target table must exist with the key schema its source table
    implies; with `create`, missing ones are created."""
    check = TargetCheck()
    stats = RequestStats()
    for t in tables:
        if t.target in check.identities:
            continue
        want = t.items.key_schema
        describe = functools.partial(target.describe, t.target)
        info = retrier.call(describe, f"describing {t.target!r}", stats)
        if info is None:
            if not create:
                raise TableMissingError(
                    f"DynamoDB table {t.target!r} (target of {t.name!r}) does not exist: create it, "
                    "or set create_tables = true",
                    t.target,
                )
            log.info("creating DynamoDB table", extra=fields(table=t.target))
            create_it = functools.partial(target.create_table, t.target, want)
            retrier.call(create_it, f"creating {t.target!r}", stats)
            info = retrier.call(describe, f"describing {t.target!r}", stats)
            if info is None:
                raise TableMissingError(f"DynamoDB table {t.target!r} vanished after CreateTable", t.target)
            check.created.append(t.target)
        if tuple(info.key_schema) != want:
            raise KeySchemaError(
                f"DynamoDB table {t.target!r} has key schema {_fmt(info.key_schema)}, but SQLite table "
                f"{t.name!r} needs {_fmt(want)}"
            )
        check.identities[t.target] = info.identity
    return check


def sources(found: Mapping[str, SyncedTable]) -> dict[str, list[str]]:
    """The source tables of each target table."""
    out: dict[str, list[str]] = {}
    for name, t in found.items():
        out.setdefault(t.target, []).append(name)
    return out


def _fmt(key: KeySchema) -> str:
    return "(" + ", ".join(f"{n} {t}" for n, t in key) + ")"
