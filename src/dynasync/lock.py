"""One dynasync writer per database, enforced by a flock the kernel releases
when the process dies, so a crash never leaves a stale lock behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dynasync.exceptions import LockedError, SourceError


def lock_path(database: Path) -> Path:
    """The lock file beside a database."""
    return database.with_name(database.name + ".dynasync.lock")


def is_held(database: Path) -> bool:
    """Whether some process holds the database's lock (a daemon, sync or backfill)."""
    try:
        fd = os.open(lock_path(database), os.O_RDONLY)
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
    """The exclusive lock on one database, held until release() or the process ends."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; LockedError names the pid of the holder."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SourceError(f"cannot create lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"another dynasync instance is running on {self.database} (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
