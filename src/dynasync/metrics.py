"""Prometheus metrics for `dynasync run`, served on [metrics] listen.

Lag is the age of the oldest change not yet applied. The triggers record no
time (they call no SQL function), so the daemon dates each change by the
pass that first saw it: an estimate that is high by at most one pass.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from dynasync.logs import fields
from dynasync.state import BackfillProgress
from dynasync.syncpass import PassResult

log = logging.getLogger(__name__)

WORST_DATABASES = 10  # a fleet's databases with labelled figures of their own


class Metrics:
    """dynasync's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.applied = Counter(
            "dynasync_changes_applied", "Writes applied to DynamoDB", ["table", "operation"], registry=r
        )
        self.pending = Gauge("dynasync_pending_changes", "Changelog rows not yet applied", registry=r)
        self.lag = Gauge("dynasync_lag_seconds", "Age of the oldest unapplied change", registry=r)
        self.last_success = Gauge(
            "dynasync_last_successful_pass_timestamp_seconds", "Unix time the last pass succeeded", registry=r
        )
        self.duration = Histogram(
            "dynasync_pass_duration_seconds",
            "Duration of successful passes",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.failures = Counter("dynasync_pass_failures", "Passes that failed (and were retried)", registry=r)
        self.dead_letters = Gauge("dynasync_dead_letters", "Rows DynamoDB refused", registry=r)
        self.retries = Counter(
            "dynasync_dynamodb_retries", "DynamoDB requests retried, by error code", ["code"], registry=r
        )
        self.throttles = Counter(
            "dynasync_dynamodb_throttles",
            "DynamoDB throttling responses, by error code",
            ["code"],
            registry=r,
        )
        self.backfill_rows = Gauge(
            "dynasync_backfill_rows", "Rows copied by the current or last backfill", ["table"], registry=r
        )
        self.backfill_done = Gauge(
            "dynasync_backfill_done", "1 when the table's backfill has finished", ["table"], registry=r
        )
        self.write_rate_limit = Gauge(
            "dynasync_write_rate_limit",
            "Write capacity units/s dynasync may send to the DynamoDB table (+Inf: no limit)",
            ["table"],
            registry=r,
        )
        self.write_concurrency_limit = Gauge(
            "dynasync_write_concurrency_limit",
            "BatchWriteItem requests dynasync may keep in flight to the DynamoDB table",
            ["table"],
            registry=r,
        )
        self.identity_changes = Counter(
            "dynasync_identity_changes",
            "Databases found not to be the one synced last (restored from an older copy, replaced)",
            registry=r,
        )
        self.verify_checked = Counter(
            "dynasync_verify_checked", "Rows and items continuous verification compared", registry=r
        )
        self.verify_mismatches = Counter(
            "dynasync_verify_mismatches", "Rows and items continuous verification found differing",
            registry=r,
        )
        self._database_gauges(r)

    def _database_gauges(self, r: CollectorRegistry) -> None:
        """The gauges of the databases themselves: by state, the worst few, tables set aside."""
        self.fleet_databases = Gauge(
            "dynasync_fleet_databases", "A fleet's databases, by state", ["state"], registry=r
        )
        per_db = "for the WORST_DATABASES furthest behind of a fleet"
        self.db_lag = Gauge("dynasync_database_lag_seconds", f"Lag {per_db}", ["database"], registry=r)
        self.db_pending = Gauge(
            "dynasync_database_pending_changes", f"Pending changes {per_db}", ["database"], registry=r
        )
        self.db_dead = Gauge(
            "dynasync_database_dead_letters", f"Dead letters {per_db}", ["database"], registry=r
        )
        self.tables_set_aside = Gauge(
            "dynasync_tables_set_aside",
            "Tables set aside because their mapping does not fit the table now (the others go on)",
            registry=r,
        )
        self._worst: set[str] = set()

    def serve(self, listen: str) -> Any:
        """Serve /metrics on "host:port"; returns what start_http_server returns."""
        host, _, port = listen.rpartition(":")
        return start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)

    def observe_pass(self, result: PassResult) -> None:
        """Count a successful pass's writes, retries, throttles, and a database not the one synced last."""
        if result.identity is not None:
            self.identity_changes.inc()
        for table, n in result.puts.items():
            self.applied.labels(table, "put").inc(n)
        for table, n in result.deletes.items():
            self.applied.labels(table, "delete").inc(n)
        for code, n in result.stats.errors.items():
            self.retries.labels(code).inc(n)
        for code, n in result.stats.throttles.items():
            self.throttles.labels(code).inc(n)
        self.duration.observe(result.seconds)
        self.last_success.set(time.time())

    def observe_write_limit(self, table: str, rate: float, in_flight: int) -> None:
        """Set a DynamoDB table's write limit gauges: a Budget.watch listener."""
        self.write_rate_limit.labels(table).set(rate)
        self.write_concurrency_limit.labels(table).set(in_flight)

    def observe_backfill(self, backfill: dict[str, BackfillProgress]) -> None:
        """Set the backfill gauges of one database's tables."""
        for table, progress in backfill.items():
            self.backfill_rows.labels(table).set(progress.rows)
            self.backfill_done.labels(table).set(1 if progress.done else 0)

    def observe_fleet(
        self,
        counts: dict[str, int],
        invalid: int,
        databases: dict[str, tuple[float, int, int]],
        tables_set_aside: int = 0,
    ) -> None:
        """The daemon's gauges: databases by state, totals, tables set aside, and per-database
        figures for only the WORST_DATABASES furthest behind, so labels stay bounded."""
        for state, n in {**counts, "invalid": invalid}.items():
            self.fleet_databases.labels(state).set(n)
        self.tables_set_aside.set(tables_set_aside)
        self.pending.set(sum(p for _, p, _ in databases.values()))
        self.dead_letters.set(sum(d for _, _, d in databases.values()))
        self.lag.set(max((lag for lag, _, _ in databases.values()), default=0.0))
        ranked = sorted(databases.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[1][2]), reverse=True)
        worst = {name: v for name, v in ranked[:WORST_DATABASES] if v[1] or v[2]}
        for name in self._worst - set(worst):
            for gauge in (self.db_lag, self.db_pending, self.db_dead):
                gauge.remove(name)
        for name, (lag, pending, dead) in worst.items():
            self.db_lag.labels(name).set(lag)
            self.db_pending.labels(name).set(pending)
            self.db_dead.labels(name).set(dead)
        self._worst = set(worst)


@contextlib.contextmanager
def serving(metrics: Metrics | None, listen: str | None) -> Iterator[None]:
    """/metrics served on `listen` for the block, when there are metrics and an address."""
    if metrics is None or not listen:
        yield
        return
    server = metrics.serve(listen)
    log.info("serving metrics", extra=fields(url=f"http://{listen}/metrics"))
    try:
        yield
    finally:
        server[0].shutdown()
