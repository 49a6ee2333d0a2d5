"""The wiring every command shares: config, database connection, schemas,
DynamoDB target, writer and the instance lock."""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from collections.abc import Callable
from types import TracebackType

from dynasync import schema as schema_mod
from dynasync import tablemap
from dynasync.config import Config
from dynasync.database import connect
from dynasync.exceptions import KeySchemaError, TableMissingError
from dynasync.lock import InstanceLock
from dynasync.logs import fields
from dynasync.schema import TableSchema
from dynasync.tablemap import TableMap
from dynasync.target import KeySchema, Target
from dynasync.writer import Retrier, Writer, WriteStats

log = logging.getLogger("dynasync")

TargetFactory = Callable[[Config], Target]


def default_target(cfg: Config) -> Target:
    from dynasync.dynamodb import DynamoTarget

    return DynamoTarget(cfg.dynamodb)


class App:
    def __init__(self, config: Config, target_factory: TargetFactory = default_target) -> None:
        self.config = config
        self.stop = threading.Event()
        self._target_factory = target_factory
        self._target: Target | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock: InstanceLock | None = None
        self._checked_targets: set[str] = set()
        # Called at every step of long work (slices, chunks, retry waits): the
        # daemon points it at the systemd watchdog so only a stuck process misses it.
        self.heartbeat: Callable[[], None] = lambda: None

    def __enter__(self) -> App:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.config.database)
        return self._conn

    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = self._target_factory(self.config)
        return self._target

    def lock(self) -> None:
        """Take the single-writer lock (sync, run, backfill, repair)."""
        if self._lock is None:
            lock = InstanceLock(self.config.database)
            if not self.config.database.exists():
                self.conn  # noqa: B018 - raises the clear "does not exist" error
            lock.acquire()
            self._lock = lock

    def writer(self) -> Writer:
        cfg = self.config.dynamodb
        return Writer(self.target, self.retrier(), cfg.max_concurrency)

    def retrier(self) -> Retrier:
        return Retrier(self.config.dynamodb.max_retry_time, self.stop, heartbeat=self.heartbeat)

    def schemas(self) -> dict[str, TableSchema]:
        return {t.source: schema_mod.inspect(self.conn, t.source) for t in self.config.tables}

    def table_maps(self, schemas: dict[str, TableSchema]) -> dict[str, TableMap]:
        return {t.source: tablemap.build(t, schemas[t.source]) for t in self.config.tables}

    def forget_targets(self) -> None:
        """The schema changed: check the target tables' key schemas again."""
        self._checked_targets.clear()

    def check_targets(self, schemas: dict[str, TableSchema], create: bool = False) -> list[str]:
        """Each target table must exist with the key schema the SQLite key implies.
        Returns the tables it created."""
        created: list[str] = []
        for t in self.config.tables:
            if t.target in self._checked_targets:
                continue
            want = tablemap.build(t, schemas[t.source]).key_schema
            stats = WriteStats()
            have = self.retrier().call(
                functools.partial(self.target.key_schema, t.target), f"describing {t.target!r}", stats
            )
            if have is None:
                if not create:
                    raise TableMissingError(
                        f"DynamoDB table {t.target!r} (target of {t.source!r}) does not exist: create it, "
                        "or set create_tables = true and run 'dynasync init'"
                    )
                log.info("creating DynamoDB table", extra=fields(table=t.target))
                self.retrier().call(
                    functools.partial(self.target.create_table, t.target, want),
                    f"creating {t.target!r}",
                    stats,
                )
                have = want
                created.append(t.target)
            if tuple(have) != want:
                raise KeySchemaError(
                    f"DynamoDB table {t.target!r} has key schema {_fmt(have)}, but SQLite table "
                    f"{t.source!r} needs {_fmt(want)}"
                )
            self._checked_targets.add(t.target)
        return created


def _fmt(key: KeySchema) -> str:
    return "(" + ", ".join(f"{n} {t}" for n, t in key) + ")"
