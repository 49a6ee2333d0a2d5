"""One database the daemon syncs, as it keeps it between turns. A single
database is a fleet of one: `run` keeps one Member per database file either way.

A turn is one pass bounded by a deadline, then a bounded step of the
background work (a reconcile, a copy): a database with a big backlog or a big
reconcile takes several turns, and every other ready database gets one in
between. Between turns an idle database holds only its lock and what its
passes cache of its schema: its connection is closed, so memory does not grow
with idle databases. A new database is initialized on its first turn; its
tables are then copied in the background like any table added live.

The failure policy is the same for every database: any error of any type in
a turn marks the database failing (the log, status and the metrics say so),
and it backs off and tries again while the others go on. A table whose
mapping no longer fits (a migration dropped a column its filter names) is set
aside alone, reported, and reconciled once it fits again.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dynasync import capture, changelog, sql, state
from dynasync.app import App
from dynasync.background import Background
from dynasync.config import Config
from dynasync.database import read_txn, writable_now, write_txn
from dynasync.exceptions import (
    DynasyncError,
    LockedError,
    OwnerError,
    RetryableError,
    TargetUnavailableError,
)
from dynasync.logs import fields
from dynasync.reload import reload
from dynasync.syncpass import PassResult, Syncer

log = logging.getLogger(__name__)

TURN_SECONDS = 0.5  # the most one turn's pass reads slices for
# Why a database may refuse a reload that says nothing about the config: another
# process or config has it for now, DynamoDB is out of reach, SQLite is busy.
NOT_NOW = (LockedError, OwnerError, RetryableError, TargetUnavailableError, sqlite3.Error)


@dataclass
class Position:
    """A database's backlog as its last turn saw it, for status and metrics."""

    high_water_mark: int = 0
    pending: int = 0
    dead_letters: int = 0
    oldest: int | None = None  # the oldest pending seq
    seen_at: float = 0.0  # when that seq was first seen pending
    backfill: dict[str, state.BackfillProgress] = field(default_factory=dict)

    def lag(self, now: float) -> float:
        """How long the oldest pending change has waited (estimated from when a turn first saw it)."""
        return max(0.0, now - self.seen_at) if self.oldest is not None else 0.0


class Member:
    """One database of the daemon: its App (sharing the daemon's DynamoDB client,
    budgets and stop), its passes, background work, failures and backlog."""

    def __init__(
        self,
        path: Path,
        cfg: Config,
        shared: App,
        heartbeat: Callable[[], None],
        on_reachable: Callable[[Member], None] | None = None,
    ) -> None:
        """`on_reachable` is called once, as soon as a turn has read the database and
        described its DynamoDB tables: both answer (systemd's READY)."""
        self.path = path
        self._on_reachable = on_reachable
        self.app = App(cfg, heartbeat=heartbeat, shared=shared)
        self.syncer = Syncer(self.app, stepped=True)
        self.background = Background(self.app, self.syncer.schema)
        self.ready = True  # a first turn straight away
        self.failures = 0
        self.passed = False  # this turn's pass went through (what its step meets comes after)
        # Whether the state may say the turns fail: a process killed while they
        # failed left it so, and only a good turn of ours clears it.
        self.failure_recorded = True
        self.error: str | None = None  # why the last turn failed
        self.retry_at = 0.0
        self.locked: str | None = None  # why another process has it
        self.position = Position()
        self.failed_tables: dict[str, str] = {}  # tables set aside, and why
        self.passes = 0
        self.signature: tuple[int, ...] = ()
        # The files as they are now, which the first turn covers: otherwise
        # the first look finds every database changed and turns it again.
        self.changed()
        self.last_turn = 0.0
        self.last_result: PassResult | None = None
        self.pending: Config | None = None  # a reloaded config still to apply

    @property
    def health(self) -> str:
        """healthy, behind (a backlog, dead letters or a table set aside), failing, or locked."""
        if self.locked is not None:
            return "locked"
        if self.failures:
            return "failing"
        busy = self.position.pending or self.position.dead_letters or self.failed_tables
        return "behind" if busy else "healthy"

    def changed(self) -> bool:
        """Whether the database or its WAL changed since the last look (a stat, no connection)."""
        sig: list[int] = []
        for p in (self.path, Path(f"{self.path}-wal")):
            try:
                st = os.stat(p)
                sig += [st.st_mtime_ns, st.st_size, st.st_ino]
            except OSError:
                sig += [0, 0, 0]
        if tuple(sig) == self.signature:
            return False
        self.signature = tuple(sig)
        return True

    def turn(self) -> bool:
        """One bounded pass and a background step; whether work is left for another turn now.
        Never raises: whatever goes wrong is this database's failure alone."""
        self.ready, self.last_turn, self.passed = False, time.monotonic(), False
        try:
            more = self._turn()
        except (LockedError, OwnerError) as e:
            if self.locked is None:
                log.warning("skipping a database another dynasync instance or config syncs", extra=fields(
                    database=str(self.path), error=str(e)))
            self.locked = str(e)
            return False
        except Exception as e:  # the failure policy: any error, of any type, fails this database alone
            self._failed(e)
            try:  # the backlog grows while it fails: status and the metrics show it
                self._observe()
            except Exception as why:  # the database itself may be what fails
                log.debug("could not read the backlog: %s", why)
            return False
        finally:
            self.app.disconnect()
        if self.failures:
            log.info("recovered", extra=fields(database=str(self.path), failed_turns=self.failures))
        self.failures, self.locked, self.error = 0, None, None
        return more

    def _turn(self) -> bool:
        app = self.app
        if app.follow_the_file():
            log.warning("the database file was replaced: locking and syncing the new one",
                        extra=fields(database=str(self.path)))
        app.lock()
        if not writable_now(app.conn):
            # The application holds its write lock: skip this round, never wait
            # on one database while the others are due.
            log.debug("the database is busy: skipping it this round", extra=fields(database=str(self.path)))
            self.ready = True
            return False
        self._apply_pending()
        if sql.STATE not in state.installed_tables(app.conn):
            log.info("a new database: installing capture, then copying its tables",
                     extra=fields(database=str(self.path)))
            capture.init(app, set_aside=True)
        if self._on_reachable is not None:
            self.syncer.schema.refresh()  # the schema read, the DynamoDB tables described
            self._observe()
            self._on_reachable(self)
            self._on_reachable = None
        r = self.last_result = self.syncer.run_pass(deadline=time.monotonic() + TURN_SECONDS)
        self.passes += 1
        self.passed = True
        if r.applied or r.rejected:
            log.info("pass", extra=fields(
                database=str(self.path), changes=r.entries, writes=r.applied, dead_letters=r.rejected,
                high_water_mark=r.high_water_mark, seconds=round(r.seconds, 3), retries=r.stats.retries))
        self._set_aside(r.failed)
        # A step every turn, even when the pass stopped at its deadline with a
        # backlog left: a reconcile or a table added live must not wait for the backlog to end.
        stepped = self.background.step()
        more = r.more or stepped
        self._observe()
        if self.failures or self.failure_recorded:
            self._record_failure(None)  # recovered: status stops saying it fails
        return more

    def _set_aside(self, failed: dict[str, str]) -> None:
        """Report tables newly set aside, and those back."""
        for name in sorted(set(failed) - set(self.failed_tables)):
            log.warning("a table is set aside: its mapping does not fit the table now; the other tables "
                        "go on, and it is reconciled once it fits again (fix the config and reload)",
                        extra=fields(database=str(self.path), table=name, error=failed[name]))
        for name in sorted(set(self.failed_tables) - set(failed)):
            log.info("a table set aside is back", extra=fields(database=str(self.path), table=name))
        self.failed_tables = dict(failed)

    def _observe(self) -> None:
        """Read the backlog while the connection is open."""
        conn, p = self.app.conn, self.position
        with read_txn(conn):
            p.high_water_mark = state.high_water_mark(conn)
            oldest, p.pending = changelog.oldest_pending(conn, p.high_water_mark)
            p.dead_letters = state.dead_letter_count(conn)
            p.backfill = state.backfill_progress(conn)
        if oldest != p.oldest:
            p.oldest, p.seen_at = oldest, time.time()

    def _failed(self, error: BaseException) -> None:
        """Back off this database alone; the others carry on."""
        cfg = self.app.config.sync
        if self.app.stop.is_set() and self.passed and self.failures:
            # Stopped in the step after a pass that went through: it had recovered.
            log.info("recovered", extra=fields(database=str(self.path), failed_turns=self.failures))
            self.failures = 0
            self._record_failure(None)
        self.failures += 1
        self.error = _describe(error)
        delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (self.failures - 1))
        delay *= random.uniform(0.8, 1.0)
        self.retry_at = time.monotonic() + delay
        self.ready = True
        if self.app.stop.is_set():
            # Stopping: the pass in flight was cut short; the mark did not
            # move, so its changes are applied on the next start.
            log.info("stopping: the pass in flight is left to the next start", extra=fields(
                database=str(self.path), error=self.error))
            return
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "pass failed; retrying with backoff", extra=fields(
            database=str(self.path), error=self.error, failures=self.failures, retry_in=round(delay, 1)))
        log.debug("the failure's traceback", exc_info=error, extra=fields(database=str(self.path)))
        self._record_failure(self.error)

    def _record_failure(self, error: str | None) -> None:
        """Keep (or clear) the failure in the database's state, for `status`; best effort,
        since the failure may be that the database cannot be written."""
        try:
            with write_txn(self.app.conn):
                state.record_failure(self.app.conn, error, self.failures)
            self.failure_recorded = error is not None
        except Exception as e:  # the failure itself is already logged; status just won't show it
            log.debug("could not record the failure for status: %s", e)

    def reconfigure(self, cfg: Config) -> None:
        """Run on under a reloaded config; raises (keeping the old one) if it does not fit this database.
        Refused only for now (the database locked, DynamoDB out of reach), it is tried again each turn."""
        self.pending = None
        try:
            self.app.lock()
            self._apply(cfg)
        except NOT_NOW:
            self.pending, self.ready = cfg, True  # a turn soon takes it, not the next write
            raise
        finally:
            self.app.disconnect()
        self.ready = True

    def _apply(self, cfg: Config) -> None:
        reload(self.app, cfg, set_aside=self.failed_tables)
        self.syncer.schema.invalidate()

    def _apply_pending(self) -> None:
        """The reloaded config this database could not take at the reload, if it can now."""
        cfg, self.pending = self.pending, None
        if cfg is None:
            return
        try:
            self._apply(cfg)
        except NOT_NOW:
            self.pending = cfg
            raise
        except DynasyncError as e:
            log.error("reload refused for a database; it keeps its previous config",
                      extra=fields(database=str(self.path), error=str(e)))
            return
        log.info("a database took the reloaded config", extra=fields(database=str(self.path)))

    def close(self) -> None:
        """Stop syncing this database: close its connection and let its lock go."""
        self.app.close()


def _describe(error: BaseException) -> str:
    """One line for the log and status: a user error's own sentence, or the type and message of a bug."""
    if isinstance(error, DynasyncError):
        return str(error)
    return f"{type(error).__name__}: {error}"
