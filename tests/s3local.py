"""Start moto's standalone server (`moto_server`, from moto[server], installed by
scripts/bootstrap) on a free 127.0.0.1 port: the S3 the oversize tests write to."""

from __future__ import annotations

import subprocess
import sys

from ddblocal import free_port, wait_until_listening


class S3Local:
    """moto's server, S3 among its services, in its own process."""

    def __init__(self) -> None:
        for _ in range(3):  # a probed port can be taken before the server binds it
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            self.proc = self._start()
            if self._up():
                return
        raise RuntimeError(f"moto_server exited with {self.proc.returncode} on 3 ports in a row")

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _up(self) -> bool:
        if wait_until_listening(self.proc, self.port, 30):
            return True
        if self.proc.poll() is not None:
            return False
        self.stop()
        raise RuntimeError("moto_server did not start within 30 s")

    def pause(self) -> None:
        """S3 out of reach: the server stops answering (SIGSTOP), as a network outage would."""
        self.proc.send_signal(19)

    def resume(self) -> None:
        """S3 answers again."""
        self.proc.send_signal(18)

    def stop(self) -> None:
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
