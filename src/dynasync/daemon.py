"""`dynasync run`: passes on an APScheduler interval and, through a watchdog
observer on the database's directory, as soon as the database or its WAL
changes. Transient failures back off exponentially and log once; the first
success after them logs "recovered" once. SIGTERM/SIGINT let the pass in
flight finish and save, then exit cleanly."""

from __future__ import annotations

import logging
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from dynasync import changelog, state
from dynasync.app import App, log
from dynasync.database import read_txn
from dynasync.exceptions import DynasyncError, TargetError
from dynasync.logs import fields
from dynasync.metrics import Metrics
from dynasync.notify import Notifier
from dynasync.syncpass import PassResult, Syncer

TRANSIENT: tuple[type[BaseException], ...] = (TargetError, sqlite3.OperationalError)


class _DatabaseEvents(FileSystemEventHandler):
    def __init__(self, database: Path, on_change: Any) -> None:
        self._paths = {str(database), str(database) + "-wal"}
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if paths & self._paths:
            self._on_change()


class Daemon:
    def __init__(self, app: App) -> None:
        self.app = app
        self.syncer = Syncer(app)
        self.wake = threading.Event()
        self.file_changed = threading.Event()
        self.failures = 0
        self.passes = 0
        self.last_result: PassResult | None = None
        self.notifier = Notifier()
        self._ready = False
        self.metrics: Metrics | None = None

    def request_stop(self, *_: object) -> None:
        self.app.stop.set()
        self.wake.set()

    def _on_file_change(self) -> None:
        self.file_changed.set()
        self.wake.set()

    def run(self) -> int:
        app = self.app
        app.lock()
        app.heartbeat = self.notifier.watchdog
        cfg = app.config.sync
        database = app.config.database.resolve()
        previous = {
            sig: signal.signal(sig, self._handle_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(
            self.wake.set, "interval", seconds=cfg.interval, id="pass", max_instances=1, coalesce=True
        )
        observer: Any = None
        metrics_server: Any = None
        try:
            if app.config.metrics.listen:
                self.metrics = Metrics()
                metrics_server = self.metrics.serve(app.config.metrics.listen)
                log.info("serving metrics", extra=fields(url=f"http://{app.config.metrics.listen}/metrics"))
            scheduler.start()
            if cfg.watch:
                observer = Observer()
                observer.schedule(_DatabaseEvents(database, self._on_file_change), str(database.parent))
                observer.start()
            log.info(
                "running",
                extra=fields(
                    tables=len(app.config.tables),
                    interval=cfg.interval,
                    watch=cfg.watch,
                    database=str(database),
                ),
            )
            self.wake.set()  # a first pass straight away
            self._loop()
        finally:
            self.notifier.stopping()
            if metrics_server is not None:
                metrics_server[0].shutdown()
            scheduler.shutdown(wait=False)
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped", extra=fields(passes=self.passes))
        return 0

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: finishing the pass in flight", extra=fields(signal=signal.Signals(signum).name))
        self.request_stop()

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
            started = time.time()
            try:
                self.last_result = self.syncer.run_pass()
            except TRANSIENT as e:
                if self.metrics is not None:
                    self.metrics.failures.inc()
                self._observe(started)
                self._failed(e)
                continue
            self.passes += 1
            r = self.last_result
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
    return Daemon(app).run()
