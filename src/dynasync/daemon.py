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

from dynasync.app import App, log
from dynasync.exceptions import TargetError
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

    def request_stop(self, *_: object) -> None:
        self.app.stop.set()
        self.wake.set()

    def _on_file_change(self) -> None:
        self.file_changed.set()
        self.wake.set()

    def run(self) -> int:
        app = self.app
        app.lock()
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
        try:
            scheduler.start()
            if cfg.watch:
                observer = Observer()
                observer.schedule(_DatabaseEvents(database, self._on_file_change), str(database.parent))
                observer.start()
            log.info(
                "running: %d table(s), interval %gs, watch %s",
                len(app.config.tables),
                cfg.interval,
                "on" if cfg.watch else "off",
            )
            self.wake.set()  # a first pass straight away
            self._loop()
        finally:
            scheduler.shutdown(wait=False)
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped after %d pass(es)", self.passes)
        return 0

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the pass in flight", signal.Signals(signum).name)
        self.request_stop()

    def _loop(self) -> None:
        app, cfg = self.app, self.app.config.sync
        while not app.stop.is_set():
            self.wake.wait(cfg.interval)
            if app.stop.is_set():
                return
            if self.file_changed.is_set():
                # Let a burst of commits land so it becomes one pass.
                app.stop.wait(cfg.debounce)
                self.file_changed.clear()
            self.wake.clear()
            try:
                self.last_result = self.syncer.run_pass()
            except TRANSIENT as e:
                self._failed(e)
                continue
            self.passes += 1
            if self.failures:
                log.info("recovered after %d failed pass(es)", self.failures)
                self.failures = 0
            r = self.last_result
            if r.applied or r.rejected:
                log.info(
                    "pass: %d change(s), %d write(s), %d dead letter(s), mark %d, %.3fs",
                    r.entries,
                    r.applied,
                    r.rejected,
                    r.high_water_mark,
                    r.seconds,
                )

    def _failed(self, error: BaseException) -> None:
        cfg = self.app.config.sync
        self.failures += 1
        delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (self.failures - 1))
        delay *= random.uniform(0.8, 1.0)
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "pass failed (%s); retrying with backoff, next in %.1fs", error, delay)
        deadline = time.monotonic() + delay
        while not self.app.stop.is_set() and time.monotonic() < deadline:
            self.app.stop.wait(min(0.5, deadline - time.monotonic()))
        self.wake.set()


def run(app: App) -> int:
    return Daemon(app).run()
