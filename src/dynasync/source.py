"""One database of a fleet as `run` keeps it between turns.

A turn is one pass bounded by a deadline, then a step of any background copy
(dynasync.background): a database with a big backlog takes several turns,
and every other ready database gets one in between. Between turns an idle
database holds only its lock and what its passes cache of its schema: its
connection is closed, so memory does not grow with idle databases. A new
database is initialized on its first turn; its tables are then copied in the
background like any table added live.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynasync import capture, changelog, sql, state
from dynasync.app import App
from dynasync.background import Copies
from dynasync.config import Config
from dynasync.database import read_txn
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
TRANSIENT = (LockedError, OwnerError, RetryableError, TargetUnavailableError, sqlite3.Error)


@dataclass
class Position:
    """A database's backlog as its last turn saw it, for status and metrics."""

    pending: int = 0
    dead_letters: int = 0
    oldest: int | None = None  # the oldest pending seq
    seen_at: float = 0.0  # when that seq was first seen pending

    def lag(self, now: float) -> float:
        """How long the oldest pending change has waited (estimated from when a turn first saw it)."""
        return max(0.0, now - self.seen_at) if self.oldest is not None else 0.0


class Source:
    """One database of the fleet: its App (sharing the fleet's DynamoDB client,
    budgets and stop), its passes, copies, failures and backlog."""

    def __init__(self, path: Path, cfg: Config, shared: App, heartbeat: Callable[[], None]) -> None:
        self.path = path
        self.app = App(cfg, heartbeat=heartbeat, shared=shared)
        self.syncer = Syncer(self.app)
        self.copies = Copies(self.app, self.syncer)
        self.ready = True  # a first turn straight away
        self.failures = 0
        self.retry_at = 0.0
        self.locked: str | None = None  # why another process has it
        self.position = Position()
        self.signature: tuple[int, ...] = ()
        # The files as they are now, which the first turn covers: otherwise
        # the first look finds every database changed and turns it again.
        self.changed()
        self.last_turn = 0.0
        self.last_result: PassResult | None = None
        self.pending: Config | None = None  # a reloaded config still to apply

    @property
    def health(self) -> str:
        """healthy, behind (a backlog or dead letters), failing, or locked (another process syncs it)."""
        if self.locked is not None:
            return "locked"
        if self.failures:
            return "failing"
        return "behind" if self.position.pending or self.position.dead_letters else "healthy"

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
        """One bounded pass and a copy step; whether work is left for another turn now."""
        self.ready, self.last_turn = False, time.monotonic()
        try:
            more = self._turn()
        except (LockedError, OwnerError) as e:
            if self.locked is None:
                log.warning("skipping a database another dynasync instance or config syncs", extra=fields(
                    database=str(self.path), error=str(e)))
            self.locked = str(e)
            return False
        except (DynasyncError, sqlite3.Error) as e:
            self._failed(e)
            return False
        finally:
            self.app.disconnect()
        if self.failures:
            log.info("recovered", extra=fields(database=str(self.path), failed_turns=self.failures))
        self.failures, self.locked = 0, None
        return more

    def _turn(self) -> bool:
        app = self.app
        app.lock()
        self._apply_pending()
        if sql.STATE not in state.installed_tables(app.conn):
            log.info("a new database: installing capture, then copying its tables",
                     extra=fields(database=str(self.path)))
            capture.init(app)
        r = self.last_result = self.syncer.run_pass(deadline=time.monotonic() + TURN_SECONDS)
        more = r.more or self.copies.step()
        self._observe()
        return more

    def _observe(self) -> None:
        """Read the backlog while the connection is open."""
        conn, p = self.app.conn, self.position
        with read_txn(conn):
            hwm = state.high_water_mark(conn)
            oldest, p.pending = changelog.oldest_pending(conn, hwm)
            p.dead_letters = state.dead_letter_count(conn)
        if oldest != p.oldest:
            p.oldest, p.seen_at = oldest, time.time()

    def _failed(self, error: BaseException) -> None:
        """Back off this database alone; the others carry on."""
        cfg = self.app.config.sync
        self.failures += 1
        delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (self.failures - 1))
        delay *= random.uniform(0.8, 1.0)
        self.retry_at = time.monotonic() + delay
        self.ready = True
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "turn failed; retrying with backoff", extra=fields(
            database=str(self.path), error=str(error), failures=self.failures, retry_in=round(delay, 1)))

    def reconfigure(self, cfg: Config) -> None:
        """Run on under a reloaded config; raises (keeping the old one) if it does not fit this database.
        Refused only for now (the database locked, DynamoDB out of reach), it is tried again each turn."""
        self.pending = None
        try:
            self.app.lock()
            self._apply(cfg)
        except TRANSIENT:
            self.pending, self.ready = cfg, True  # a turn soon takes it, not the next write
            raise
        finally:
            self.app.disconnect()
        self.ready = True

    def _apply(self, cfg: Config) -> None:
        reload(self.app, cfg)
        self.syncer.schema.invalidate()

    def _apply_pending(self) -> None:
        """The reloaded config this database could not take at the reload, if it can now."""
        cfg, self.pending = self.pending, None
        if cfg is None:
            return
        try:
            self._apply(cfg)
        except TRANSIENT:
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
