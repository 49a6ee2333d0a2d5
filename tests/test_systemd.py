"""The unit files, and the notify protocol the daemon speaks to systemd.

The units' sandbox is checked three ways: `systemd-analyze verify` and
`systemd-analyze security --offline` read the files; then dynasync runs inside
that sandbox. No systemd service manager runs here (PID 1 is not systemd:
`systemctl is-system-running` answers "offline" and /run/systemd/system does
not exist), so neither `systemctl start` nor `systemd-run` can start a unit.
Those tests therefore start dynasync through sandbox_exec.py, which builds the
sandbox from the unit file with the kernel mechanisms systemd 252 uses (see
its docstring for the few places where it is stricter). They need root and
libseccomp, and say so when skipped.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Env
from ddblocal import DynamoDBLocal, free_port
from test_cli import DYNASYNC, cli, wait_until

from dynasync import examples
from dynasync.notify import Notifier


def _unit_file(tmp_path: Path, example: str, instance: str | None) -> Path:
    """The shipped unit in a file named as systemd would load it (an instance
    of the template), its ExecStart pointed at this checkout's dynasync."""
    unit, text = examples.FILES[example], examples.text(example)
    path = tmp_path / (unit.replace("@.", f"@{instance}.") if instance else unit)
    path.write_text(text.replace("/usr/local/bin/dynasync", DYNASYNC))
    return path


CHECKOUT = Path(__file__).resolve().parent.parent  # the venv's editable install reads src/ there


@pytest.mark.parametrize(("example", "instance"), [("unit", None), ("template-unit", "app")])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, example: str, instance: str | None) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check the unit files"
    # The packaged unit (systemd/ in the checkout is a symlink to it).
    text = examples.text(example)
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=true",
                 "PrivateTmp=true", "ReadWritePaths=", "User=dynasync", "KillSignal=SIGTERM",
                 "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=dynasync"):
        assert line in text, line
    # verify needs ExecStart's binary to exist: _unit_file points it at this checkout's.
    p = subprocess.run([analyze, "verify", str(_unit_file(tmp_path, example, instance))], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    if instance:
        assert "--config /etc/dynasync/%i.toml" in text and "StateDirectory=dynasync/%i" in text


# "→ Overall exposure level for dynasync.service: 1.1 OK 🙂" ("->" and ":-)"
# outside a UTF-8 locale): the one line that rates the unit as a whole.
_OVERALL = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<score>\d+\.\d+) (?P<level>[A-Z]+)")
MAX_EXPOSURE = 2.0


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
    # A setting that adds exposure starts with "✗" ("-" outside a UTF-8 locale).
    report = "\n".join(line for line in p.stdout.splitlines() if line.startswith(("✗", "- ")))
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


# --- dynasync inside the units' sandbox ---

SANDBOX_EXEC = Path(__file__).with_name("sandbox_exec.py")


def _sandbox_missing() -> str | None:
    """Why sandbox_exec.py cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root: it builds the namespaces, mounts and seccomp filters as systemd's manager does"
    if not ctypes.util.find_library("seccomp"):
        return "needs libseccomp (the library systemd builds its seccomp filters with)"
    if not shutil.which("systemd-analyze"):
        return "needs systemd-analyze (for the system call groups)"
    # A container may refuse new mount or user namespaces even to root.
    p = subprocess.run([sys.executable, "-c", "import ctypes; exit(ctypes.CDLL(None).unshare(0x10020000))"])
    if p.returncode != 0:
        return "needs mount and user namespaces, which this machine refuses"
    return None


@dataclass(frozen=True)
class Site:
    """A stand-in for a host's /: the tests' units have /etc/dynasync and /var/lib moved under `root`."""

    root: Path
    app: int  # the application's user and group, which own the database directory
    service: int  # the unit's User= and Group= (the README's dynasync user)

    def path(self, absolute: str) -> Path:
        """Where the host path `absolute` lives on this site."""
        return self.root / absolute.lstrip("/")


def _free_ids(count: int) -> list[int]:
    used = {u.pw_uid for u in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    return [i for i in range(61000, 65000) if i not in used][:count]


@pytest.fixture
def site() -> Iterator[Site]:
    """A site under /run: not /tmp, which PrivateTmp= replaces, nor pytest's tmp_path, which only root may enter."""
    missing = _sandbox_missing()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="dynasync-unit-", dir="/run"))
    try:
        app, service = _free_ids(2)
        s = Site(root, app, service)
        for name in ("etc/dynasync", "var/lib/app"):
            s.path(name).mkdir(parents=True)
        for d in (root, *root.rglob("*")):
            d.chmod(0o755)
        yield s
    finally:
        shutil.rmtree(root)


def _site_unit(s: Site, example: str, instance: str | None) -> Path:
    """The shipped unit with the site's paths and this checkout's dynasync, and nothing else changed."""
    unit, text = examples.FILES[example], examples.text(example)
    for host in ("/etc/dynasync/", "/var/lib/"):
        text = text.replace(host, f"{s.path(host)}/")
    path = s.root / (unit.replace("@.", f"@{instance}.") if instance else unit)
    path.write_text(text.replace("/usr/local/bin/dynasync", DYNASYNC))
    return path


def _drop_in(s: Site, *lines: str) -> Path:
    """What a site would put in with `systemctl edit`: the test's own ids (no dynasync user exists
    here), and, when this Python lives under /root or /home, ProtectHome=tmpfs with it bound back in."""
    ours = {Path(sys.base_prefix).resolve(), Path(sys.prefix), Path(DYNASYNC).parent, CHECKOUT}
    under_home = sorted({str(p) for p in ours if p.is_relative_to("/root") or p.is_relative_to("/home")})
    home = ["ProtectHome=tmpfs", *(f"BindReadOnlyPaths={p}" for p in under_home)] if under_home else []
    # A checkout under /tmp (a CI clone) is behind the unit's PrivateTmp=: bound back in, as a site would.
    under_tmp = sorted({str(p) for p in ours if p.is_relative_to("/tmp") or p.is_relative_to("/var/tmp")})
    home += [f"BindReadOnlyPaths={p}" for p in under_tmp]
    path = s.root / "override.conf"
    path.write_text("\n".join([
        "[Service]", f"User={s.service}", f"Group={s.service}",
        f"SupplementaryGroups={s.app}",  # what `usermod -aG app dynasync` gives the real user
        "Environment=AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1",
        *home, *lines]) + "\n")
    return path


def _give_to_app(s: Site, directory: Path) -> None:
    """The database directory as an application owns it: its group may write, and new files keep that group."""
    for p in directory.iterdir():
        os.chown(p, s.app, s.app)
        p.chmod(0o660)
    os.chown(directory, s.app, s.app)
    directory.chmod(0o2770)


def _sandboxed(s: Site, unit: Path, drop_in: Path, instance: str | None, notify: Path | None,
               **kw: Any) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(SANDBOX_EXEC), str(unit), "--drop-in", str(drop_in),
            "--state-root", str(s.path("/var/lib"))]
    args += ["--instance", instance] if instance else []
    args += ["--notify-socket", str(notify)] if notify else []
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)


PROBE = r"""
import errno, json, mmap, os, resource, socket, sqlite3, sys, threading, time
from ctypes import CDLL, get_errno
from watchdog.events import FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

out = {}
def attempt(name, action):
    try:
        action()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode[e.errno]

db, state = sys.argv[1], os.environ.get("STATE_DIRECTORY", "/nonexistent")
def write(path):
    with open(path, "w"):
        pass
def sqlite_wal():
    conn = sqlite3.connect(os.path.join(db, "probe.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
def watch():
    seen = threading.Event()
    handler = FileSystemEventHandler()
    handler.on_any_event = lambda event: seen.set()
    observer = InotifyObserver()
    observer.schedule(handler, db)
    observer.start()
    write(os.path.join(db, "touched"))
    ok = seen.wait(5)
    observer.stop()
    observer.join()
    if not ok:
        raise OSError(errno.ETIMEDOUT, "no inotify event")
def listen():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
def user_namespace():
    libc = CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:
        raise OSError(get_errno(), "unshare")
def thread():
    t = threading.Thread(target=time.sleep, args=(0,))
    t.start()
    t.join()

attempt("write the database directory", lambda: write(os.path.join(db, "probe")))
attempt("SQLite in WAL mode there", sqlite_wal)
attempt("watch it with inotify", watch)
attempt("write the state directory", lambda: write(os.path.join(state, "marker")))
attempt("write /etc", lambda: write("/etc/dynasync-probe"))
attempt("write /var/tmp", lambda: write("/var/tmp/dynasync-probe"))
for family in ("AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_PACKET"):
    attempt(family, lambda: socket.socket(getattr(socket, family), socket.SOCK_DGRAM).close())
attempt("listen on TCP", listen)
attempt("map writable executable memory", lambda: mmap.mmap(-1, 4096, prot=7))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
attempt("raise the open-file limit to the hard limit", lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
attempt("lower its own priority", lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))
attempt("create a user namespace", user_namespace)
attempt("start a thread", thread)
out["uid"] = os.getuid()
out["database directory's group, seen inside"] = os.stat(db).st_gid
marker = os.path.join(state, "marker")
out["mode of a new file"] = oct(os.stat(marker).st_mode & 0o777) if os.path.exists(marker) else None
out["sees process 1"] = os.path.exists("/proc/1")
out["sees /proc/meminfo"] = os.path.exists("/proc/meminfo")
print(json.dumps(out))
"""


def test_units_sandbox_allows_what_dynasync_needs_and_little_else(site: Site) -> None:
    """A probe run as the unit would run dynasync (only ExecStart= swapped) may use
    the database directory through the application's group (PrivateUsers= or
    not), SQLite, inotify, its state directory, IP and unix sockets and the
    open-file limit; it may not write the OS, use other socket families, map
    writable executable memory, retune its scheduling or make namespaces."""
    probe = site.root / "probe.py"
    probe.write_text(PROBE)
    probe.chmod(0o644)
    db_dir = site.path("/var/lib/app")
    _give_to_app(site, db_dir)
    unit = _site_unit(site, "unit", None)
    drop_in = _drop_in(site, "ExecStart=", f"ExecStart={sys.executable} {probe} {db_dir}")
    p = _sandboxed(site, unit, drop_in, None, None, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr.decode()
    seen = json.loads(stdout)
    assert seen == {
        "write the database directory": "ok", "SQLite in WAL mode there": "ok", "watch it with inotify": "ok",
        "write the state directory": "ok", "write /etc": "EROFS", "write /var/tmp": "ok",
        "AF_INET": "ok", "AF_INET6": "ok", "AF_UNIX": "ok", "AF_NETLINK": "EAFNOSUPPORT",
        "AF_PACKET": "EAFNOSUPPORT", "listen on TCP": "ok", "map writable executable memory": "EPERM",
        "raise the open-file limit to the hard limit": "ok", "lower its own priority": "EPERM",
        "create a user namespace": "EPERM", "start a thread": "ok", "uid": site.service,
        # PrivateUsers= maps only root and the unit's own ids: the application's group shows as nobody,
        # and yet it gives write access (the kernel checks the real group id).
        "database directory's group, seen inside": 65534,
        "mode of a new file": "0o600", "sees process 1": False, "sees /proc/meminfo": False,
    }, stderr.decode()
    # On the host, the files it made belong to the application's group (the directory is setgid).
    assert (db_dir / "probe").stat().st_gid == site.app


class _NotifySocket:
    """The service manager's end of the notify socket. Like systemd, it reads all the time:
    the daemon's next notification would block once a dozen were left unread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o777)  # the daemon runs as another user
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def saw(self, field: str) -> bool:
        """Whether some notification so far carried `field` (such as READY=1)."""
        return any(field in m.split("\n") for m in list(self.messages))

    def close(self) -> None:
        """Stop reading, and take in what is still queued."""
        self._done.set()
        self._reader.join()
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        self.sock.close()


def _assert_confined(pid: int, s: Site, state: Path) -> None:
    """The daemon's process, as the host sees it, is confined as the unit says."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split() == [str(s.service)] * 4, status["Uid"]
    assert str(s.app) in status["Groups"].split(), status["Groups"]
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0, status
    for ns in ("mnt", "user", "uts", "ipc"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    environ = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if v)
    assert environ["STATE_DIRECTORY"] == str(state)
    assert state.stat().st_uid == s.service and stat.S_IMODE(state.stat().st_mode) == 0o700


def _fleet_config(env: Env) -> None:
    """The config turned into a fleet's: every *.db in the directory (the fleet daemon raises its open-file limit)."""
    text = env.config_path.read_text().replace(f"database = \"{env.db_path}\"",
                                               f"databases = \"{env.db_path.parent}/*.db\"")
    env.config_path.write_text(text)


@pytest.mark.parametrize(("example", "instance", "fleet"), [("unit", None, False), ("template-unit", "app", True)])
def test_daemon_runs_inside_the_units_sandbox(site: Site, ddb_local: DynamoDBLocal, ddb: Any,
                                              example: str, instance: str | None, fleet: bool) -> None:
    """`dynasync run` confined by the unit (one database under dynasync.service, a fleet
    under dynasync@app.service) gets ready, syncs a row, serves metrics, pings the
    watchdog, leaves SQLite's side files usable by the application, and stops cleanly on SIGTERM."""
    db_dir = site.path("/var/lib/app")
    env = Env(db_dir, ddb_local.endpoint, ddb)
    env.config_path = site.path(f"/etc/dynasync/{instance or 'config'}.toml")
    env.table("t", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    if fleet:
        _fleet_config(env)
    cli(env, "init", check=True)
    port = free_port()
    with env.config_path.open("a") as f:
        f.write(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    _give_to_app(site, db_dir)
    notify = _NotifySocket(site.root / "notify.sock")
    log = site.root / "daemon.log"
    with log.open("wb") as out:
        daemon = _sandboxed(site, _site_unit(site, example, instance), _drop_in(site, "WatchdogSec=1s"), instance,
                            site.root / "notify.sock", stdout=out, stderr=subprocess.STDOUT)

    def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 20) -> None:
        try:
            wait_until(lambda: predicate() or daemon.poll() is not None, timeout)
            assert predicate()
        except AssertionError:
            raise AssertionError(f"{what} did not happen; the daemon's log:\n{log.read_text()}") from None

    try:
        wait_for("READY=1", lambda: notify.saw("READY=1"), 60)
        _assert_confined(daemon.pid, site, site.path("/var/lib/dynasync" + (f"/{instance}" if instance else "")))
        # SQLite made its -wal and -shm files as dynasync, under UMask=0077, yet the application may use
        # them. (The daemon closes each database between turns, so its side files come and go.)
        for side in ("app.db-wal", "app.db-shm"):
            with contextlib.suppress(FileNotFoundError):
                st = (db_dir / side).stat()
                assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (site.service, site.app, 0o660), side
        env.sql("INSERT INTO t VALUES (1, 'a')")
        wait_for("the row reaching DynamoDB", lambda: len(env.items("t")) == 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert b"dynasync_pending_changes" in r.read()
        wait_for("WATCHDOG=1", lambda: notify.saw("WATCHDOG=1"), 10)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        finally:
            daemon.kill()  # a no-op once it has exited
            notify.close()
    assert daemon.returncode == 0, log.read_text()
    assert notify.messages and "STOPPING=1" in notify.messages[-1], notify.messages
