"""One dynasync writer per database file, enforced by flock(2) on the
database file itself: the lock belongs to the file (its inode), so a symlink
or a hard link to the same database meets the same lock, and the kernel
releases it when the process dies, so a crash never leaves it behind.

flock locks are separate from the POSIX locks SQLite takes, but closing any
descriptor of a file drops every POSIX lock the process holds on it. So a
descriptor opened here is closed only when this process has no SQLite
connection to the database open: after the connection on release, never on
a failed acquire, and in is_held before status opens one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dynasync.exceptions import LockedError, SourceError

# Descriptors of failed attempts: closing them could drop SQLite's own locks
# in this process, so they stay open until it exits.
_parked: list[int] = []


def holder(database: Path) -> int | None:
    """The pid holding the database's lock, as /proc/locks reports it (None if unknown)."""
    try:
        st = os.stat(database)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()  # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == inode:
            return int(parts[4])
    return None


def is_held(database: Path) -> bool:
    """Whether some process holds the database's lock (a daemon, sync or backfill).
    Call it before this process opens a connection to the database."""
    try:
        fd = os.open(database, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class InstanceLock:
    """The exclusive lock on one database file, held until release() or the process ends."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._fd: int | None = None

    def acquire(self, park: bool = True) -> None:
        """Take the lock; LockedError names the pid of the holder. `park=False`:
        this process has no connection to the database open, so a failed
        attempt's descriptor can be closed (a fleet retries its skipped databases)."""
        try:
            fd = os.open(self.database, os.O_RDONLY)
        except OSError as e:
            raise SourceError(f"cannot open {self.database} to lock it: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if park:
                _parked.append(fd)
            else:
                os.close(fd)
            pid = holder(self.database)
            raise LockedError(
                f"another dynasync instance is running on {self.database} (pid {pid or 'unknown'})"
            ) from None
        self._fd = fd

    def still_the_file(self) -> bool:
        """Whether the lock is on the file the path names now (not on one a
        replacement renamed away: that lock would no longer keep others out)."""
        if self._fd is None:
            return True
        try:
            held, now = os.fstat(self._fd), os.stat(self.database)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

    def release(self) -> None:
        """Let the lock go; call after closing this process's connections to the database."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
