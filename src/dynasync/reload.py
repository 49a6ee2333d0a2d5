"""Reading the config again while `run` runs (SIGHUP, `systemctl reload`).

The new config is checked against the database and DynamoDB before anything
changes: an invalid one raises, and the daemon keeps running the old one.
Tables added are armed at the next pass and copied in the background
(dynasync.background); tables removed lose their triggers at the next pass,
and their items stay in DynamoDB. What cannot change under a running process
(the database, the DynamoDB endpoint, the metrics address, the file watch)
keeps its old value until a restart, with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from dynasync import config, provision, state, tables
from dynasync.app import App
from dynasync.config import Config
from dynasync.database import write_txn
from dynasync.exceptions import DynasyncError, Poison
from dynasync.logs import fields

log = logging.getLogger(__name__)

# (section, key) pairs only a restart applies.
FIXED = (
    ("source", "database"),
    ("dynamodb", "region"),
    ("dynamodb", "endpoint_url"),
    ("dynamodb", "connect_timeout"),
    ("dynamodb", "read_timeout"),
    ("metrics", "listen"),
    ("sync", "watch"),
    ("sync", "interval"),
    # The S3 client is made once, like DynamoDB's; bucket and prefix apply at once.
    ("s3", "endpoint_url"),
    ("s3", "region"),
    ("s3", "max_concurrency"),
)


@dataclass
class Reload:
    """What a reload changed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # "[section] key" left as they were


def reload(app: App, new: Config | None = None, set_aside: Collection[str] = ()) -> Reload:
    """Run on under the config file as it is now (or `new`: one database's
    config in a fleet's); raises, keeping the old config, when it is invalid,
    names a table that is not there, or a DynamoDB table that does not exist
    and may not be created. A table already `set_aside` (its mapping does not
    fit it now) may still not fit: it stays set aside, and does not stop the others."""
    new = new if new is not None else config.load(app.config.path)
    new, result = _keep_fixed(app.config, new)
    found: dict[str, tables.SyncedTable] = {}
    for entry in new.tables:
        try:
            found.update(tables.load(app.conn, new, [entry.source]))
        except (DynasyncError, Poison):
            if entry.source not in set_aside:
                raise
    provision.ensure_targets(found.values(), app.target, app.retrier(), new.dynamodb.create_tables)
    before = {t.source for t in app.config.tables}
    after = {t.source for t in new.tables}
    result.added, result.removed = sorted(after - before), sorted(before - after)
    app.reconfigure(new)
    if result.removed:
        # Their rows are no longer synced, so their dead letters can never clear.
        with write_txn(app.conn):
            state.forget_dead_letters(app.conn, result.removed)
    for name in result.removed:
        log.warning("table removed from the config: its capture triggers are removed and its items "
                    "stay in DynamoDB", extra=fields(table=name))
    for key in result.needs_restart:
        log.warning("this setting changed but only a restart applies it", extra=fields(setting=key))
    return result


def _keep_fixed(old: Config, new: Config) -> tuple[Config, Reload]:
    """The new config with the old value of every setting only a restart applies."""
    result = Reload()
    if new.database != old.database:
        result.needs_restart.append("[source] database")
        new = dataclasses.replace(new, database=old.database)
    for section, key in FIXED[1:]:
        was, now = getattr(old, section), getattr(new, section)
        if getattr(was, key) != getattr(now, key):
            result.needs_restart.append(f"[{section}] {key}")
            new = dataclasses.replace(new, **{section: dataclasses.replace(now, **{key: getattr(was, key)})})
    return new, result
