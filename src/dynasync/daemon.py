"""`dynasync run`: passes on an APScheduler interval and, through a watchdog
observer on the database's directory, as soon as the database or its WAL
changes. Transient failures back off exponentially and log once; the first
success after them logs "recovered" once. SIGTERM/SIGINT let the pass in
flight finish and save, then exit cleanly."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from dynasync import changelog, state
from dynasync.app import App
from dynasync.background import Copies
from dynasync.database import read_txn
from dynasync.exceptions import DynasyncError, TableGoneError, TargetError
from dynasync.logs import fields
from dynasync.metrics import Metrics, serving
from dynasync.notify import Notifier
from dynasync.reload import reload
from dynasync.syncpass import PassResult, Syncer

log = logging.getLogger(__name__)

# What a later pass may get past: DynamoDB failing, the database busy, a table
# gone for a moment (a migration between dropping and creating it).
TRANSIENT: tuple[type[BaseException], ...] = (TargetError, sqlite3.OperationalError, TableGoneError)


class _DatabaseEvents(FileSystemEventHandler):
    """Calls on_change when the database file or its WAL changes."""

    def __init__(self, database: Path, on_change: Callable[[], None]) -> None:
        self._paths = {str(database), str(database) + "-wal"}
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if paths & self._paths:
            self._on_change()


class Daemon:
    """The main loop of `dynasync run`, with its scheduler, file watch, metrics and systemd notices."""

    def __init__(self, app: App, notifier: Notifier | None = None) -> None:
        self.app = app
        self.notifier = notifier or Notifier()
        self.syncer = Syncer(app)
        self.copies = Copies(app, self.syncer)
        self.wake = threading.Event()
        self.reload_requested = threading.Event()
        self.file_changed = threading.Event()
        self.failures = 0
        self.passes = 0
        self.last_result: PassResult | None = None
        self.metrics: Metrics | None = Metrics() if app.config.metrics.listen else None
        if self.metrics is not None:
            # `run` writes within the sync budget; its adaptive limits are the ones all writers share.
            app.budgets["sync"].watch(self.metrics.observe_write_limit)
        self._ready = False

    def request_stop(self, *_: object) -> None:
        """Let the pass in flight finish, then leave the loop."""
        self.app.stop.set()
        self.wake.set()

    def _on_file_change(self) -> None:
        self.file_changed.set()
        self.wake.set()

    def run(self) -> int:
        """Run until asked to stop; 0 on a clean stop."""
        app = self.app
        app.lock()
        previous = {sig: signal.signal(sig, self._handle_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle_reload)
        try:
            with self._services():
                log.info(
                    "running",
                    extra=fields(
                        tables=len(app.config.tables),
                        interval=app.config.sync.interval,
                        watch=app.config.sync.watch,
                        database=str(app.config.database.resolve()),
                    ),
                )
                self.wake.set()  # a first pass straight away
                self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped", extra=fields(passes=self.passes))
        return 0

    @contextlib.contextmanager
    def _services(self) -> Iterator[None]:
        """The metrics server, the interval scheduler and the file watch, stopped on the way out."""
        cfg = self.app.config.sync
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(
            self.wake.set, "interval", seconds=cfg.interval, id="pass", max_instances=1, coalesce=True
        )
        database = self.app.config.database.resolve()
        watch = (watching(_DatabaseEvents(database, self._on_file_change), database.parent)
                 if cfg.watch else contextlib.nullcontext())
        try:
            with serving(self.metrics, self.app.config.metrics.listen):
                scheduler.start()
                try:
                    with watch:
                        yield
                finally:
                    scheduler.shutdown(wait=False)
        finally:
            self.notifier.stopping()

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: finishing the pass in flight", extra=fields(signal=signal.Signals(signum).name))
        self.request_stop()

    def _handle_reload(self, signum: int, frame: FrameType | None) -> None:
        log.info("reloading the config after the pass in flight", extra=fields(signal="SIGHUP"))
        self.reload_requested.set()
        self.wake.set()

    def _reload(self) -> None:
        """Run on under the config file as it is now, or keep the old one if it is not valid."""
        self.reload_requested.clear()
        try:
            r = reload(self.app)
        except (DynasyncError, sqlite3.Error) as e:
            log.error("reload refused; still running the previous config", extra=fields(error=str(e)))
            return
        self.syncer.schema.invalidate()
        log.info("reloaded the config", extra=fields(added=r.added, removed=r.removed))

    def _loop(self) -> None:
        app, cfg = self.app, self.app.config.sync
        # With WatchdogSec= set, the loop must come round often enough to ping;
        # a pass that hangs stops the pings and systemd restarts the service.
        tick = min(cfg.interval, self.notifier.watchdog_interval or cfg.interval)
        while not app.stop.is_set():
            self.notifier.watchdog()
            self.wake.wait(tick)
            if app.stop.is_set():
                return
            if not self.wake.is_set():
                continue
            if self.file_changed.is_set():
                # Let a burst of commits land so it becomes one pass.
                app.stop.wait(cfg.debounce)
                self.file_changed.clear()
            self.wake.clear()
            if self.reload_requested.is_set():
                self._reload()
            self._one_pass()

    def _one_pass(self) -> None:
        started = time.time()
        try:
            r = self.last_result = self.syncer.run_pass()
            if self.copies.step():
                self.wake.set()  # more to copy: come straight back, after the next pass
        except TRANSIENT as e:
            if self.app.stop.is_set():
                # Stopping: the pass in flight was cut short; the mark did not
                # move, so its changes are applied on the next start.
                log.info("stopping: the pass in flight is left to the next start", extra=fields(error=str(e)))
                return
            if self.metrics is not None:
                self.metrics.failures.inc()
            self._observe(started)
            self._failed(e)
            return
        self.passes += 1
        if self.metrics is not None:
            self.metrics.observe_pass(r)
        self._observe(started)
        summary = (
            f"mark {r.high_water_mark}, last pass {time.strftime('%H:%M:%S')}: "
            f"{r.entries} change(s), {r.rejected} dead letter(s)"
        )
        if not self._ready:
            self._ready = True
            self.notifier.ready(summary)  # the first pass proves SQLite and DynamoDB both work
        else:
            self.notifier.status(summary)
        if self.failures:
            log.info("recovered", extra=fields(failed_passes=self.failures))
            self.failures = 0
        if r.applied or r.rejected:
            log.info(
                "pass",
                extra=fields(
                    changes=r.entries,
                    writes=r.applied,
                    dead_letters=r.rejected,
                    high_water_mark=r.high_water_mark,
                    seconds=round(r.seconds, 3),
                    retries=r.stats.retries,
                ),
            )

    def _observe(self, pass_started: float) -> None:
        if self.metrics is None:
            return
        conn = self.app.conn
        try:
            with read_txn(conn):
                hwm = state.high_water_mark(conn)
                oldest, pending = changelog.oldest_pending(conn, hwm)
                dead = state.dead_letter_count(conn)
                backfill = state.backfill_progress(conn)
        except (DynasyncError, sqlite3.Error) as e:
            log.debug("could not read the position for metrics: %s", e)
            return
        self.metrics.observe_position(pending, oldest, pass_started, dead, backfill)

    def _failed(self, error: BaseException) -> None:
        cfg = self.app.config.sync
        self.failures += 1
        delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (self.failures - 1))
        delay *= random.uniform(0.8, 1.0)
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(
            level,
            "pass failed; retrying with backoff",
            extra=fields(error=str(error), failures=self.failures, retry_in=round(delay, 1)),
        )
        self.notifier.status(f"failing ({self.failures} pass(es)): {error}")
        deadline = time.monotonic() + delay
        while not self.app.stop.is_set() and time.monotonic() < deadline:
            self.notifier.watchdog()
            self.app.stop.wait(min(0.5, deadline - time.monotonic()))
        self.wake.set()


def run(app: App) -> int:
    """`dynasync run`: one database, or a fleet (`[source] databases`)."""
    if app.config.databases is not None:
        from dynasync.fleetd import FleetDaemon  # fleetd imports this module's neighbours

        return FleetDaemon(app).run()
    return Daemon(app).run()


@contextlib.contextmanager
def watching(handler: FileSystemEventHandler, directory: Path, recursive: bool = False) -> Iterator[None]:
    """A watchdog observer sending the directory's file events to `handler` for the block."""
    observer = Observer()
    observer.schedule(handler, str(directory), recursive=recursive)
    observer.start()
    try:
        yield
    finally:
        observer.stop()
        observer.join(timeout=5)
