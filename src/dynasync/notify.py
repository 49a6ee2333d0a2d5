"""The systemd notify protocol over $NOTIFY_SOCKET: READY, STATUS, WATCHDOG
and STOPPING. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time


class Notifier:
    """Sends sd_notify messages when systemd asked for them."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # Linux abstract sockets are spelled with a leading "@".
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._pinged = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening."""
        return bool(self._address)

    def send(self, **fields: str | int) -> None:
        """Send one message of KEY=value lines."""
        if not self._address:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        # Never blocks: a notify socket nobody reads (its queue full) or gone must
        # not stall the daemon; the message is dropped, and the service keeps running.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            s.setblocking(False)
            s.sendto(message, self._address)

    def ready(self, status: str) -> None:
        """READY=1: the service works."""
        self.send(ready=1, status=status)

    def status(self, status: str) -> None:
        """The one-line STATUS= shown by systemctl status."""
        self.send(status=status)

    def watchdog(self) -> None:
        """WATCHDOG=1, when the unit has a watchdog; at most four times a ping
        interval, however often the daemon's waits call it."""
        if self.watchdog_interval is None:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._pinged < self.watchdog_interval / 4:
                return
            self._pinged = now
        self.send(watchdog=1)

    def stopping(self) -> None:
        """STOPPING=1: shutting down."""
        self.send(stopping=1, status="stopping")
