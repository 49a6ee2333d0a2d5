"""Whether the database file dynasync syncs is the continuation of the one it
synced last, or something else took its place while it was not looking:

* restored from an older copy (a Litestream restore, a VM snapshot, `.backup`
  copied back): its generation is the same, but its committed mark is behind
  the one dynasync saw it reach, so positions it already applied come again;
* replaced by another database (a new file renamed over the path, `VACUUM
  INTO` and a rename): its generation differs;
* its changelog position went backwards in any other way.

A database's generation is a random id kept in its own state (it travels with
the file, backups included). What dynasync last saw of each database, its
generation, mark and file identity, is kept outside it, in a small file in
the state directory: `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
`$XDG_STATE_HOME/dynasync`, else `~/.local/state/dynasync`. When the two
disagree, every table owes a reconcile before the changelog is trusted again.
A host that lost that directory cannot tell a restore from the real thing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dynasync import sql


@dataclass(frozen=True)
class Seen:
    """What dynasync last saw of one database: its generation and mark, its file,
    and the last change whose writes it sent (DynamoDB may hold them even if the
    mark was never saved past them: a crash between the acknowledgement and the commit)."""

    generation: str
    mark: int
    device: int
    inode: int
    sent: int = 0
    sent_change: str = ""  # which change is at `sent` (change_at): a restored copy holds another, or none


def state_directory() -> Path:
    """Where what dynasync saw of each database is kept, outside the databases."""
    explicit = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "dynasync"


class Memory:
    """What dynasync last saw of each database, one small JSON file each."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_directory()

    def _file(self, database: Path) -> Path:
        real = os.path.realpath(database)
        return self.directory / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.json"

    def seen(self, database: Path) -> Seen | None:
        """What was last seen of this database, if anything (and it is readable)."""
        try:
            doc = json.loads(self._file(database).read_text())
            return Seen(str(doc["generation"]), int(doc["mark"]), int(doc["device"]), int(doc["inode"]),
                        int(doc.get("sent", 0)), str(doc.get("sent_change", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember(self, database: Path, seen: Seen) -> None:
        """Keep what was seen now; best effort (a read-only state directory only loses the detection)."""
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            doc = {**asdict(seen), "database": os.path.realpath(database)}
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".seen-")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self._file(database))


@dataclass(frozen=True)
class Verdict:
    """How the database relates to what was seen of it; `why` is None when it simply goes on."""

    now: Seen
    why: str | None = None


def compare(before: Seen | None, now: Seen) -> Verdict:
    """Whether `now` is the continuation of `before`."""
    if before is None:
        return Verdict(now)
    if before.generation != now.generation:
        return Verdict(now, "the database file was replaced by another database (its generation changed)")
    if now.mark < before.mark:
        return Verdict(now, f"the database was restored from an older copy (its mark went back from "
                            f"{before.mark} to {now.mark})")
    if before.sent > now.mark and before.sent_change != now.sent_change:
        return Verdict(now, f"the database was restored from an older copy (it does not hold change "
                            f"{before.sent}, whose writes were already sent to DynamoDB)")
    return Verdict(now)


def change_at(conn: sqlite3.Connection, seq: int) -> str:
    """Which change the changelog holds at `seq` (its table and key, hashed), or ""."""
    row = conn.execute(sql.CHANGELOG_AT, (seq,)).fetchone()
    return hashlib.sha256(repr(tuple(row)).encode()).hexdigest()[:16] if row is not None else ""


class Tracker:
    """A database's identity across the passes of one process: checked at the
    start of each pass, remembered before writes go out and after a pass ends."""

    def __init__(self, database: Path, memory: Memory | None = None) -> None:
        self.database = database
        self.memory = memory or Memory()
        self._seen: Seen | None = None  # as last remembered
        self._now: Seen | None = None  # as checked at the start of this pass

    def check(self, conn: sqlite3.Connection, generation: str, mark: int) -> Verdict:
        """Whether the database is the continuation of the one seen last."""
        if self._seen is None:
            self._seen = self.memory.seen(self.database)
        before = self._seen
        sent_change = change_at(conn, before.sent) if before is not None and before.sent > mark else ""
        now = Seen(generation, mark, *file_identity(self.database))
        self._now = now
        return compare(before, replace(now, sent_change=sent_change))

    def sending(self, conn: sqlite3.Connection, high: int) -> None:
        """Writes for changes up to `high` are about to go out: remember so first."""
        seen = self._seen or self._now
        if self._now is None or (seen is not None and high <= max(seen.sent, seen.mark)):
            return
        self._keep(replace(seen or self._now, sent=high, sent_change=change_at(conn, high)))

    def ended(self, mark: int) -> None:
        """The pass saved `mark`: remember it with the generation and file it began with."""
        now = self._now
        if now is None:
            return
        seen = replace(now, mark=mark)
        if self._seen is not None and self._seen.sent > mark:  # sent past the mark: still worth knowing
            seen = replace(seen, sent=self._seen.sent, sent_change=self._seen.sent_change)
        if seen != self._seen:
            self._keep(seen)

    def _keep(self, seen: Seen) -> None:
        self.memory.remember(self.database, seen)
        self._seen = seen


def file_identity(database: Path) -> tuple[int, int]:
    """The file's device and inode (0, 0 when it cannot be read)."""
    try:
        st = os.stat(database)
    except OSError:
        return 0, 0
    return st.st_dev, st.st_ino
