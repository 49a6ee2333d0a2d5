"""The wiring every command shares: the config, the database connection, the
DynamoDB target, the retry loop and writer built from the config, and the
instance lock. It holds no sync logic of its own."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from types import TracebackType

from dynasync import provision, sql, state, tables
from dynasync.budget import Budget
from dynasync.config import Config
from dynasync.database import connect
from dynasync.lock import InstanceLock
from dynasync.objects import Offload
from dynasync.retry import Retrier
from dynasync.tables import SyncedTable
from dynasync.target import ObjectStore, Target
from dynasync.workers import Stop
from dynasync.writer import Writer

TargetFactory = Callable[[Config], Target]
StoreFactory = Callable[[Config], ObjectStore]


def default_target(cfg: Config) -> Target:
    """The boto3 target for the config's [dynamodb] section."""
    from dynasync.dynamodb import DynamoTarget

    return DynamoTarget(cfg.dynamodb)


def default_store(cfg: Config) -> ObjectStore:
    """The boto3 S3 client for the config's [s3] section."""
    from dynasync.s3 import S3Store

    return S3Store(cfg)


class App:
    """Everything a command needs, opened lazily and closed together."""

    def __init__(
        self,
        config: Config,
        target_factory: TargetFactory = default_target,
        heartbeat: Callable[[], None] | None = None,
        shared: App | None = None,
        store_factory: StoreFactory = default_store,
    ) -> None:
        """`shared`: another App whose DynamoDB client, write budgets and stop
        event this one uses too (the databases of a fleet share them)."""
        self.config = config
        self.stop: Stop = shared.stop if shared is not None else Stop()
        # Called at every step of long work (slices, chunks, retry waits), so
        # only a stuck process misses the systemd watchdog.
        self.heartbeat: Callable[[], None] = heartbeat or (lambda: None)
        self._target_factory = target_factory
        self._target: Target | None = None
        self._store_factory = store_factory
        self._store: ObjectStore | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock: InstanceLock | None = None
        self.budgets: dict[str, Budget]
        if shared is not None:
            self._target_factory = lambda _: shared.target
            self._store_factory = lambda _: shared.objects
            self.budgets = shared.budgets
            return
        concurrency = config.dynamodb.max_concurrency
        self.budgets = {"sync": Budget(config.dynamodb.max_write_rate, concurrency)}
        self.budgets["backfill"] = self.budgets["sync"].sharing(config.backfill.max_write_rate)

    def reconfigure(self, config: Config) -> None:
        """Run on under a new config (a reload): the same database, connection and lock."""
        self.config = config
        self.budgets["sync"].set_max_rate(config.dynamodb.max_write_rate)
        self.budgets["backfill"].set_max_rate(config.backfill.max_write_rate)

    def __enter__(self) -> App:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and release the lock."""
        self.disconnect()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def disconnect(self) -> None:
        """Close the connection, keeping the lock (an idle database of a fleet)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection to the application's database."""
        if self._conn is None:
            self._conn = connect(self.config.database)
        return self._conn

    @property
    def target(self) -> Target:
        """The DynamoDB client."""
        if self._target is None:
            self._target = self._target_factory(self.config)
        return self._target

    @property
    def objects(self) -> ObjectStore:
        """The S3 client, for the attributes of oversized items (made on first use)."""
        if self._store is None:
            self._store = self._store_factory(self.config)
        return self._store

    def lock(self) -> None:
        """Take the single-writer lock (sync, run, backfill, repair), as the database's one config."""
        if self._lock is None:
            lock = InstanceLock(self.config.database)
            if not self.config.database.exists():
                self.conn  # noqa: B018 - raises the clear "does not exist" error
            lock.acquire(park=self._conn is not None)
            try:
                if sql.STATE in state.installed_tables(self.conn):
                    state.check_owner(self.conn, self.config.path)
            except BaseException:
                # Not this config's database: do not keep its lock, or the next
                # lock() (a fleet keeps its Apps) would skip the check. The
                # connection goes first: closing the lock's descriptor would drop its locks.
                self.disconnect()
                lock.release()
                raise
            self._lock = lock

    def follow_the_file(self) -> bool:
        """If the database file was replaced (renamed over) since the lock was taken,
        let go of the old file's connection and lock, for lock() to take the new
        one; whether it was."""
        if self._lock is None or self._lock.still_the_file():
            return False
        self.disconnect()
        self._lock.release()
        self._lock = None
        return True

    def retrier(self) -> Retrier:
        """The retry loop, bounded by [dynamodb] max_retry_time and this app's stop event."""
        return Retrier(self.config.dynamodb.max_retry_time, self.stop, heartbeat=self.heartbeat)

    def writer(self, budget: str = "sync") -> Writer:
        """A writer with [dynamodb] max_concurrency requests in flight, within the
        write budget of sync ([dynamodb] max_write_rate) or of copies ([backfill]
        max_write_rate); the adaptive limits per target are shared by both."""
        offload = Offload(self.conn, lambda: self.objects)
        return Writer(
            self.target, self.retrier(), self.config.dynamodb.max_concurrency, self.budgets[budget], offload
        )

    def tables(self, names: Sequence[str] | None = None) -> dict[str, SyncedTable]:
        """The configured tables (or the named ones), with their DynamoDB tables checked."""
        found = tables.load(self.conn, self.config, names)
        provision.ensure_targets(found.values(), self.target, self.retrier())
        return found
