"""`dynasync run` for a fleet (`[source] databases = "<glob>"`): one process,
one DynamoDB client and one write budget for every database.

Databases take turns (dynasync.source): each round gives every ready database
one bounded turn, so one with a huge backlog cannot hold the others up. A
database is ready when the file watch on its directory sees it (or its WAL)
change, when a stat at each interval finds it changed, and every
KEEPALIVE_SECONDS anyway (its DynamoDB tables are checked then). New files
matching the glob are picked up, initialized and copied; files that go away
stop being synced and are reported. SIGHUP reloads the config for every
database; SIGTERM finishes the turn in flight and exits.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from dynasync import config, fleet
from dynasync.app import App
from dynasync.daemon import watching
from dynasync.exceptions import ConfigError, DynasyncError
from dynasync.logs import fields
from dynasync.metrics import Metrics, serving
from dynasync.notify import Notifier
from dynasync.source import TRANSIENT, Source

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 300.0


class _FleetEvents(FileSystemEventHandler):
    """Marks the database a file event concerns ready, and asks for a rescan
    when a file matching the glob appears or goes away."""

    def __init__(self, daemon: FleetDaemon) -> None:
        self.daemon = daemon

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = str(raw or "")
            if not path:
                continue
            database = path.removesuffix("-wal")
            source = self.daemon.sources.get(database)
            # Only a write is a change: a turn opens and closes the database
            # itself, and the open, close, attrib, created and deleted (-wal)
            # events that causes would make it ready again, turn after turn.
            if source is not None and event.event_type == "modified":
                source.ready = True
                self.daemon.wake.set()
            elif self.daemon.matches(path) and event.event_type in ("created", "moved", "deleted"):
                self.daemon.rescan.set()
                self.daemon.wake.set()


class FleetDaemon:
    """The main loop of `run` over a fleet of databases."""

    def __init__(self, app: App, notifier: Notifier | None = None) -> None:
        self.shared = app  # the fleet's config, DynamoDB client, budgets and stop
        self.notifier = notifier or Notifier()
        self.sources: dict[str, Source] = {}
        self.invalid: dict[str, str] = {}  # databases whose config is invalid, and why
        self.wake = threading.Event()
        self.rescan = threading.Event()
        self.reload_requested = threading.Event()
        self.metrics: Metrics | None = Metrics() if app.config.metrics.listen else None
        if self.metrics is not None:
            app.budgets["sync"].watch(self.metrics.observe_write_limit)
        self._ready = False

    @property
    def cfg(self) -> config.Config:
        """The fleet's config."""
        return self.shared.config

    def matches(self, path: str) -> bool:
        """Whether a path is one the glob would make a database."""
        pattern = self.cfg.databases or ""
        return fnmatch.fnmatch(path, pattern) and not path.endswith(fleet.SIDE_FILES)

    def run(self) -> int:
        """Run until asked to stop; 0 on a clean stop."""
        _raise_file_limit()
        handlers = {signal.SIGTERM: self._stop, signal.SIGINT: self._stop, signal.SIGHUP: self._hup}
        previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        try:
            with self._services():
                log.info("running", extra=fields(databases=self.cfg.databases,
                                                 interval=self.cfg.sync.interval))
                self.rescan.set()
                self.wake.set()
                self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for source in self.sources.values():
                source.close()
        log.info("stopped", extra=fields(databases=len(self.sources)))
        return 0

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: finishing the turn in flight", extra=fields(signal=signal.Signals(signum).name))
        self.shared.stop.set()
        self.wake.set()

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        log.info("reloading the config after the turn in flight", extra=fields(signal="SIGHUP"))
        self.reload_requested.set()
        self.wake.set()

    @contextlib.contextmanager
    def _services(self) -> Iterator[None]:
        """The metrics server and the watch on the glob's directory, stopped on the way out."""
        base, recursive = _watch_root(self.cfg.databases or "")
        watch = (watching(_FleetEvents(self), base, recursive)
                 if self.cfg.sync.watch and base.is_dir() else contextlib.nullcontext())
        try:
            with serving(self.metrics, self.cfg.metrics.listen), watch:
                yield
        finally:
            self.notifier.stopping()

    def _loop(self) -> None:
        interval = self.cfg.sync.interval
        tick = min(interval, self.notifier.watchdog_interval or interval)
        next_look = 0.0
        while not self.shared.stop.is_set():
            self.notifier.watchdog()
            self.wake.wait(tick)
            self.wake.clear()
            if self.shared.stop.is_set():
                return
            if self.reload_requested.is_set():
                self._reload()
            if time.monotonic() >= next_look:
                self.rescan.set()
                self._look()
                next_look = time.monotonic() + interval
            if self.rescan.is_set():
                self._rescan()
            if self._round():
                self.wake.set()
            self._report()

    def _look(self) -> None:
        """Mark ready each database whose files changed, that was skipped
        (locked or failing, now due) or has not had a turn for KEEPALIVE_SECONDS."""
        now = time.monotonic()
        for s in self.sources.values():
            if s.changed() or s.locked is not None or now - s.last_turn > KEEPALIVE_SECONDS:
                s.ready = True

    def _round(self) -> bool:
        """One turn for each ready database; whether any has work left."""
        now, more = time.monotonic(), False
        for source in list(self.sources.values()):
            if self.shared.stop.is_set():
                return False
            if not source.ready or source.retry_at > now:
                continue
            self.notifier.watchdog()
            if source.turn():
                source.ready, more = True, True
            if self.metrics is not None and source.last_result is not None:
                self.metrics.observe_pass(source.last_result)
                source.last_result = None
        return more

    def _rescan(self) -> None:
        """Start syncing databases that appeared; stop those that went away."""
        self.rescan.clear()
        found = {str(p): p for p in fleet.members(self.cfg)}
        for key in sorted(set(self.sources) - set(found)):
            log.warning("a database went away: no longer syncing it", extra=fields(database=key))
            self.sources.pop(key).close()
        for key, path in found.items():
            if key in self.sources:
                continue
            try:
                member = self.cfg.for_database(path)
            except ConfigError as e:
                if self.invalid.get(key) != str(e):
                    log.error("cannot sync a database: its config is invalid", extra=fields(
                        database=key, error=str(e)))
                self.invalid[key] = str(e)
                continue
            self.invalid.pop(key, None)
            self.sources[key] = Source(path, member, self.shared, self.notifier.watchdog)
            self.wake.set()

    def _reload(self) -> None:
        """Read the config again and apply it to every database, or keep the old one."""
        self.reload_requested.clear()
        try:
            new = config.load(self.cfg.path)
            if new.databases is None:
                raise ConfigError("[source] databases: a fleet cannot become one database without a restart")
        except ConfigError as e:
            log.error("reload refused; still running the previous config", extra=fields(error=str(e)))
            return
        refused, for_the_config = 0, 0
        earlier = {key: source.pending for key, source in self.sources.items()}
        for key, source in self.sources.items():
            try:
                source.reconfigure(new.for_database(source.path))
            except TRANSIENT as e:
                refused += 1
                log.warning("a database cannot take the reloaded config now; it will on a later turn",
                            extra=fields(database=key, error=str(e)))
            except DynasyncError as e:
                refused, for_the_config = refused + 1, for_the_config + 1
                log.error("reload refused for a database; it keeps its previous config",
                          extra=fields(database=key, error=str(e)))
        if self.sources and refused == len(self.sources) and for_the_config:
            # Not one database takes it, and not only because it was busy or
            # DynamoDB was out of reach: it is the config that is wrong, and
            # files that appear later (or databases busy just now) must not get it either;
            # a database still owed the last good config keeps that debt.
            for key, source in self.sources.items():
                source.pending = earlier[key]
            log.error("reload refused; still running the previous config",
                      extra=fields(error="no database accepts the new config"))
            return
        self.shared.reconfigure(new)
        self.invalid.clear()
        self.rescan.set()
        log.info("reloaded the config", extra=fields(databases=len(self.sources), refused=refused))

    def _report(self) -> None:
        """The fleet's health for systemd and the metrics."""
        counts = dict.fromkeys(("healthy", "behind", "failing", "locked"), 0)
        for s in self.sources.values():
            counts[s.health] += 1
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        text = f"{len(self.sources)} database(s): {summary}"
        if not self._ready:
            self._ready = True
            self.notifier.ready(text)
        else:
            self.notifier.status(text)
        if self.metrics is not None:
            self.metrics.observe_fleet(
                counts, len(self.invalid),
                {key: (s.position.lag(time.time()), s.position.pending, s.position.dead_letters)
                 for key, s in self.sources.items()},
            )


def _watch_root(pattern: str) -> tuple[Path, bool]:
    """The directory to watch for a glob, and whether its subdirectories too
    (when a wildcard is in a directory part)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            return Path(*fixed), True
        fixed.append(part)
    return Path(*fixed) if fixed else Path("."), False


def _raise_file_limit() -> None:
    """Each database's lock holds a descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
