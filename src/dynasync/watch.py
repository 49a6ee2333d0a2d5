"""The file watch of `run`: a watchdog observer on the directory that holds
the databases (dynasync.fleet.root), handing each file event to the daemon."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class FileEvents(FileSystemEventHandler):
    """Hands each path a file event names (its source and its destination) to `notify`."""

    def __init__(self, notify: Callable[[str, str], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        """One event: notify(event type, path) for each path it names."""
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw or "")
            if path:
                self._notify(event.event_type, path)


@contextlib.contextmanager
def watching(handler: FileSystemEventHandler, directory: Path, recursive: bool = False) -> Iterator[None]:
    """A watchdog observer sending the directory's file events to `handler` for the block."""
    observer = Observer()
    observer.schedule(handler, str(directory), recursive=recursive)
    observer.start()
    try:
        yield
    finally:
        observer.stop()
        observer.join(timeout=5)
