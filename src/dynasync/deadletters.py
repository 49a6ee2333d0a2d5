"""`dynasync dead-letters`: list rows DynamoDB refused, or queue them again."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

from dynasync import schema, state
from dynasync.app import App
from dynasync.exceptions import LockedError, SourceError
from dynasync.progress import Progress
from dynasync.state import DeadLetter
from dynasync.syncpass import PassResult, Syncer


@dataclass
class RetryResult:
    """What `dead-letters --retry` did."""

    queued: int
    pass_result: PassResult | None  # None when a running daemon will pick them up
    remaining: int


def list_dead_letters(app: App, table: str | None = None) -> list[DeadLetter]:
    """Every dead letter, or one table's, each with its table's key width."""
    state.require_installed(app.conn)
    if table:
        app.config.table(table)
    widths = {}
    for t in app.config.tables:
        with contextlib.suppress(SourceError):
            widths[t.source] = len(schema.inspect(app.conn, t.source).key)
    return [
        dataclasses.replace(d, width=widths.get(d.table, 0))
        for d in state.dead_letters(app.conn)
        if table is None or d.table == table
    ]


def retry(app: App, table: str | None = None, progress: Progress | None = None) -> RetryResult:
    """Queue the dead letters again; apply them now unless a daemon holds the database."""
    state.require_installed(app.conn)
    state.check_owner(app.conn, app.config.path)
    if table:
        app.config.table(table)
    queued = state.requeue_dead_letters(app.conn, table)
    try:
        app.lock()
    except LockedError:
        return RetryResult(queued, None, len(state.dead_letters(app.conn)))
    result = Syncer(app).run_pass(progress=progress)
    return RetryResult(queued, result, len(state.dead_letters(app.conn)))
