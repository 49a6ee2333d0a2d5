"""The unit files, and the notify protocol the daemon speaks to systemd."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Env
from test_cli import DYNASYNC, cli

from dynasync import examples
from dynasync.notify import Notifier


@pytest.mark.parametrize(("example", "instance"), [("unit", None), ("template-unit", "app")])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, example: str, instance: str | None) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check the unit files"
    # The packaged unit (systemd/ in the checkout is a symlink to it).
    unit, text = examples.FILES[example], examples.text(example)
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=true",
                 "PrivateTmp=true", "ReadWritePaths=", "User=dynasync", "KillSignal=SIGTERM",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    # verify needs ExecStart's binary to exist: point it at this checkout's.
    name = unit.replace("@.", f"@{instance}.") if instance else unit
    (tmp_path / name).write_text(text.replace("/usr/local/bin/dynasync", DYNASYNC))
    p = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    if instance:
        assert "--config /etc/dynasync/%i.toml" in text


# "→ Overall exposure level for dynasync.service: 1.1 OK 🙂" ("->" and ":-)"
# outside a UTF-8 locale): the one line that rates the unit as a whole.
_OVERALL = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<score>\d+\.\d+) (?P<level>[A-Z]+)")
MAX_EXPOSURE = 2.0


def _unit_file(tmp_path: Path, example: str, instance: str | None) -> Path:
    """The shipped unit in a file named as systemd would load it (an instance
    of the template), its ExecStart pointed at this checkout's dynasync."""
    unit, text = examples.FILES[example], examples.text(example)
    path = tmp_path / (unit.replace("@.", f"@{instance}.") if instance else unit)
    path.write_text(text.replace("/usr/local/bin/dynasync", DYNASYNC))
    return path


def _exposure(analyze: str, path: Path) -> tuple[float, str]:
    """systemd-analyze's overall exposure score for a unit file, and its report."""
    # --offline reads the file itself (no service manager needed, so it works
    # here where PID 1 is not systemd); --threshold makes it fail above the
    # limit too (its scale is the score times ten).
    p = subprocess.run([analyze, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
                        "--no-pager", str(path)],
                       capture_output=True, text=True, env={**os.environ, "SYSTEMD_COLORS": "0"})
    found = [m for m in map(_OVERALL.search, p.stdout.splitlines()) if m]
    assert len(found) == 1, f"no overall exposure line in systemd-analyze security's output:\n{p.stdout}{p.stderr}"
    assert found[0]["unit"] == path.name, found[0][0]
    report = "\n".join(line for line in p.stdout.splitlines() if line.lstrip().startswith(("✗", "x ", "- ")))
    score = float(found[0]["score"])
    assert (p.returncode == 0) == (score <= MAX_EXPOSURE), (p.returncode, score, p.stderr)
    return score, report


@pytest.mark.parametrize(("example", "instance"), [("unit", None), ("template-unit", "app")])
def test_units_are_hardened(tmp_path: Path, example: str, instance: str | None) -> None:
    """Both units keep systemd-analyze security's exposure score at 2.0 or less."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to rate the unit files"
    score, report = _exposure(analyze, _unit_file(tmp_path, example, instance))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}; what is still open:\n{report}"


def test_notifier_is_a_noop_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.ready("x")
    n.watchdog()
    n.stopping()


def test_notifier_watchdog_interval_is_half_the_timeout() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_daemon_speaks_the_notify_protocol(env: Env, tmp_path: Path) -> None:
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    cli(env, "init", check=True)
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    daemon = subprocess.Popen([DYNASYNC, "run", "--config", str(env.config_path)],
                              env={**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096).decode())
            if any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 5:
                break
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        sock.close()
    ready = [m for m in messages if "READY=1" in m]
    assert len(ready) == 1 and "STATUS=mark 0" in ready[0], messages
    assert sum("WATCHDOG=1" in m for m in messages) >= 5, messages
    assert "STOPPING=1" in messages[-1], messages
    assert daemon.returncode == 0
