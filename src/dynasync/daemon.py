"""`dynasync run`: the one daemon, for one database or a fleet of them
(`[source] databases = "<glob>"`). A single database is a fleet of one.

One process, one DynamoDB client and one write budget for every database.
Databases take turns (dynasync.member): each round gives every ready database
one bounded turn, so one with a huge backlog or a long reconcile cannot hold
the others up. A database is ready when the file watch on its directory sees
it (or its WAL) written, when a stat at each interval finds it changed, when
it is due a retry, and every KEEPALIVE_SECONDS anyway (its DynamoDB tables
are checked then). Files matching a fleet's glob that appear are picked up,
initialized and copied; files that go away stop being synced and are reported.

The failure policy: `run` stops only on a signal (SIGTERM, SIGINT), or when
its config cannot be read at start. Any error in one database's work marks
that database failing (the log, `status`, the metrics), and it backs off and
retries while the others go on. SIGHUP reloads the config for every database.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from dynasync import config, fleet, watch
from dynasync.app import App
from dynasync.exceptions import ConfigError, DynasyncError
from dynasync.logs import fields
from dynasync.member import NOT_NOW, Member
from dynasync.metrics import Metrics, serving
from dynasync.notify import Notifier

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 300.0


class Daemon:
    """The main loop of `dynasync run`, over every database of its config."""

    def __init__(self, app: App, notifier: Notifier | None = None) -> None:
        self.shared = app  # the config, DynamoDB client, budgets and stop every database shares
        self.notifier = notifier or Notifier()
        self.members: dict[str, Member] = {}
        self.by_file: dict[str, Member] = {}  # each member by its file's real path, for file events
        self.invalid: dict[str, str] = {}  # databases whose config is invalid, and why
        self.wake = threading.Event()
        self.rescan = threading.Event()
        self.file_changed = threading.Event()
        self.reload_requested = threading.Event()
        self.look_due = threading.Event()  # set at each interval by the scheduler
        self.metrics: Metrics | None = Metrics() if app.config.metrics.listen else None
        if self.metrics is not None:
            # Every database writes within the sync budget, whose adaptive limits all writers share.
            app.budgets["sync"].watch(self.metrics.observe_write_limit)
        self._ready = False

    @property
    def cfg(self) -> config.Config:
        """The daemon's config (a fleet's, or one database's)."""
        return self.shared.config

    @property
    def passes(self) -> int:
        """Successful turns so far, over every database."""
        return sum(m.passes for m in self.members.values())

    def matches(self, path: str) -> bool:
        """Whether a path is (or would be) one of the daemon's databases."""
        if self.cfg.databases is None:
            return os.path.realpath(path) == os.path.realpath(self.cfg.database)
        return fnmatch.fnmatch(path, self.cfg.databases) and not path.endswith(fleet.SIDE_FILES)

    def run(self) -> int:
        """Run until asked to stop; 0 on a clean stop."""
        _raise_file_limit()
        handlers = {signal.SIGTERM: self._stop, signal.SIGINT: self._stop, signal.SIGHUP: self._hup}
        previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        try:
            with self._services():
                log.info("running", extra=fields(
                    databases=self.cfg.databases or str(self.cfg.database.resolve()),
                    tables=len(self.cfg.tables), interval=self.cfg.sync.interval, watch=self.cfg.sync.watch))
                self.rescan.set()
                self.wake.set()
                self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for member in self.members.values():
                member.close()
        log.info("stopped", extra=fields(databases=len(self.members), passes=self.passes))
        return 0

    def request_stop(self) -> None:
        """Let the turn in flight finish, then leave the loop."""
        self.shared.stop.set()
        self.wake.set()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: no new write goes out; those sent are waited for",
                 extra=fields(signal=signal.Signals(signum).name))
        self.request_stop()

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        log.info("reloading the config after the pass in flight", extra=fields(signal="SIGHUP"))
        self.reload_requested.set()
        self.wake.set()

    @contextlib.contextmanager
    def _services(self) -> Iterator[None]:
        """The metrics server, the interval scheduler and the file watch, stopped on the way out."""
        base, recursive = fleet.root(self.cfg.databases or str(self.cfg.database))
        base = Path(os.path.realpath(base))
        on = self.cfg.sync.watch and base.is_dir()
        watching = watch.watching(watch.FileEvents(self.file_event), base, recursive) if on else None
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(self._interval, "interval", seconds=self.cfg.sync.interval, id="look",
                          max_instances=1, coalesce=True)
        try:
            with serving(self.metrics, self.cfg.metrics.listen), watching or contextlib.nullcontext():
                scheduler.start()
                try:
                    yield
                finally:
                    scheduler.shutdown(wait=False)
        finally:
            self.notifier.stopping()

    def _interval(self) -> None:
        self.look_due.set()
        self.wake.set()

    def file_event(self, event_type: str, path: str) -> None:
        """A file event: a write to a database (or its WAL) makes it ready; a
        database file appearing, moving or going away asks for a rescan."""
        member = self.by_file.get(path.removesuffix("-wal"))
        # Only a write is a change: a turn opens and closes the database
        # itself, and the open, close, attrib, created and deleted (-wal)
        # events that causes would make it ready again, turn after turn.
        if member is not None and event_type == "modified":
            member.ready = True
            self.file_changed.set()
            self.wake.set()
        elif event_type in ("created", "moved", "deleted") and self.matches(path):
            if member is not None:
                member.ready = True
            self.rescan.set()
            self.wake.set()

    def _loop(self) -> None:
        interval = self.cfg.sync.interval
        # With WatchdogSec= set, the loop must come round often enough to ping;
        # a turn that hangs stops the pings and systemd restarts the service.
        tick = min(interval, self.notifier.watchdog_interval or interval)
        self.look_due.set()  # a first look straight away
        busy = False
        while not self.shared.stop.is_set():
            self.notifier.watchdog()
            self.wake.wait(tick)
            if self.shared.stop.is_set():
                return
            if self.file_changed.is_set():
                # Let a burst of commits land so it becomes one pass; not while a
                # round left work (a round follows at once anyway, and the daemon's
                # own writes to the WAL would make it wait at every round).
                if not busy:
                    self.shared.stop.wait(self.cfg.sync.debounce)
                self.file_changed.clear()
            self.wake.clear()
            if self.reload_requested.is_set():
                self._reload()
            if self.look_due.is_set():
                self.look_due.clear()
                self.rescan.set()
                self._look()
            if self.rescan.is_set():
                self._rescan()
            busy = self._round()
            if busy:
                self.wake.set()
            self._report()

    def _look(self) -> None:
        """Mark ready each database whose files changed, that was skipped
        (locked or failing, now due) or has not had a turn for KEEPALIVE_SECONDS,
        and, at each interval, every database of a fleet of one."""
        now = time.monotonic()
        alone = len(self.members) == 1
        for m in self.members.values():
            if alone or m.changed() or m.locked is not None or now - m.last_turn > KEEPALIVE_SECONDS:
                m.ready = True

    def _round(self) -> bool:
        """One turn for each ready database; whether any has work left."""
        now, more = time.monotonic(), False
        for member in list(self.members.values()):
            if self.shared.stop.is_set():
                return False
            if not member.ready or member.retry_at > now:
                continue
            self.notifier.watchdog()
            failures = member.failures
            if member.turn():
                member.ready, more = True, True
            if self.metrics is not None:
                if member.failures > failures:
                    self.metrics.failures.inc()
                if member.last_result is not None:
                    self.metrics.observe_pass(member.last_result)
                audited = member.background.audit.taken()
                self.metrics.verify_checked.inc(audited.checked)
                self.metrics.verify_mismatches.inc(audited.mismatches)
            member.last_result = None
        return more

    def _rescan(self) -> None:
        """Start syncing databases that appeared; stop those that went away."""
        self.rescan.clear()
        paths = fleet.members(self.cfg)
        refused = fleet.clashes(self.cfg, paths)
        found = {str(p): p for p in paths if p not in refused}
        for path, why in refused.items():
            self._invalid(str(path), why)
        for key in sorted(set(self.members) - set(found)):
            log.warning("a database went away: no longer syncing it", extra=fields(database=key))
            self._forget(key)
        for key, path in found.items():
            if key in self.members:
                continue
            try:
                member_cfg = self.cfg if self.cfg.databases is None else self.cfg.for_database(path)
            except ConfigError as e:
                self._invalid(key, str(e))
                continue
            self.invalid.pop(key, None)
            member = Member(path, member_cfg, self.shared, self.notifier.watchdog, self._reachable)
            self.members[key] = member
            self.by_file[os.path.realpath(path)] = member
            self.wake.set()

    def _invalid(self, key: str, why: str) -> None:
        """A database its config cannot sync: said once, and counted."""
        if self.invalid.get(key) != why:
            log.error("cannot sync a database: its config is invalid", extra=fields(database=key, error=why))
        self.invalid[key] = why

    def _reachable(self, member: Member) -> None:
        """READY, as soon as one database and its DynamoDB tables answer (not after a
        whole first pass, which a write budget can make long)."""
        if not self._ready:
            self._ready = True
            self.notifier.ready(self._summary(self._counts()))

    def _forget(self, key: str) -> None:
        member = self.members.pop(key)
        self.by_file = {f: m for f, m in self.by_file.items() if m is not member}
        member.close()

    def _reload(self) -> None:
        """Read the config again and apply it to every database, or keep the old one."""
        self.reload_requested.clear()
        try:
            new = config.load(self.cfg.path)
            if (new.databases is None) != (self.cfg.databases is None):
                raise ConfigError("[source]: switching between database and databases needs a restart")
        except ConfigError as e:
            log.error("reload refused; still running the previous config", extra=fields(error=str(e)))
            return
        refused, for_the_config, why = 0, 0, ""
        earlier = {key: m.pending for key, m in self.members.items()}
        for key, member in self.members.items():
            try:
                member.reconfigure(new if new.databases is None else new.for_database(member.path))
            except NOT_NOW as e:
                refused += 1
                log.warning("a database cannot take the reloaded config now; it will on a later turn",
                            extra=fields(database=key, error=str(e)))
            except DynasyncError as e:
                refused, for_the_config = refused + 1, for_the_config + 1
                why = str(e)
                if self.cfg.databases is not None:
                    log.error("reload refused for a database; it keeps its previous config",
                              extra=fields(database=key, error=why))
        if self.members and refused == len(self.members) and for_the_config:
            # Not one database takes it, and not only because it was busy or
            # DynamoDB was out of reach: it is the config that is wrong, and
            # files that appear later (or databases busy just now) must not get it either;
            # a database still owed the last good config keeps that debt.
            for key, member in self.members.items():
                member.pending = earlier[key]
            alone = self.cfg.databases is None
            log.error("reload refused; still running the previous config",
                      extra=fields(error=why if alone else "no database accepts the new config"))
            return
        self.shared.reconfigure(new)
        self.invalid.clear()
        self.rescan.set()
        log.info("reloaded the config", extra=fields(databases=len(self.members), refused=refused))

    def _report(self) -> None:
        """Health for systemd (READY after the first round, at the latest: a daemon that
        retries a failing DynamoDB is running, and must not be restarted) and the metrics."""
        counts = self._counts()
        text = self._summary(counts)
        if not self._ready:
            self._ready = True
            self.notifier.ready(text)
        else:
            self.notifier.status(text)
        if self.metrics is None:
            return
        now = time.time()
        self.metrics.observe_fleet(
            counts, len(self.invalid),
            {key: (m.position.lag(now), m.position.pending, m.position.dead_letters)
             for key, m in self.members.items()},
            sum(len(m.failed_tables) for m in self.members.values()),
        )
        if self.cfg.databases is None:
            for m in self.members.values():
                self.metrics.observe_backfill(m.position.backfill)

    def _counts(self) -> dict[str, int]:
        """How many databases are healthy, behind, failing and locked."""
        counts = dict.fromkeys(("healthy", "behind", "failing", "locked"), 0)
        for m in self.members.values():
            counts[m.health] += 1
        return counts

    def _summary(self, counts: dict[str, int]) -> str:
        """The one-line STATUS=: one database's position, or a fleet's counts."""
        if self.cfg.databases is None and len(self.members) == 1:
            m = next(iter(self.members.values()))
            if m.error is not None:
                return f"failing ({m.failures} pass(es)): {m.error}"
            p = m.position
            return (f"mark {p.high_water_mark}, last pass {time.strftime('%H:%M:%S')}: "
                    f"{p.pending} change(s) pending, {p.dead_letters} dead letter(s)")
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        return f"{len(self.members)} database(s): {summary}"


def run(app: App) -> int:
    """`dynasync run`: the daemon, on one database or a fleet (`[source] databases`).
    A config DynamoDB cannot be reached with at all (no region anywhere) is refused
    at start, like a config that cannot be read; nothing else stops it."""
    app.target  # noqa: B018 - builds the client: NoRegionError now, not once per database for ever
    return Daemon(app).run()


def _raise_file_limit() -> None:
    """Each database's lock holds a descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
