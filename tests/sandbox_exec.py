"""Start a unit's ExecStart= inside the unit's sandbox the way systemd 252
would, on a machine whose PID 1 is not systemd (a VM or container where
`systemctl is-system-running` says "offline" and /run/systemd/system is
missing, so neither `systemctl start` nor `systemd-run` can run a unit).

It applies the same kernel mechanisms, in systemd's order: the mount
namespace (ProtectSystem=, ReadWritePaths=, PrivateTmp=, PrivateDevices=,
ProtectHome=, the kernel and /proc settings, StateDirectory=), UTS and IPC
namespaces, the groups, PrivateUsers='s user namespace and mapping, an
emptied capability bounding set, the user, no_new_privs and the umask, then
one seccomp filter per setting, built with libseccomp as systemd builds
them, the syscall groups expanded by `systemd-analyze syscall-filter`
itself, and the system call filter last. Then it execs ExecStart= with the
environment systemd would give it.

Usage, as root:

    python sandbox_exec.py UNIT [--drop-in FILE]... [--instance NAME]
                           [--state-root DIR] [--notify-socket PATH]

A drop-in is what `systemctl edit` writes: its settings are added to the
unit's, and an empty assignment resets a list. --state-root stands in for
/var/lib (StateDirectory=), so that a test creates nothing outside its own
directory. Where this departs from systemd it is stricter, never looser:
system calls newer than systemd's @known get the default action rather than
ENOSYS, and /dev holds only null, zero, full, random, urandom and tty (no
pts or mqueue). Settings it does not know are refused too, so a unit that gains
one cannot pass unchecked. The manager's own settings (Restart=,
WatchdogSec=, ...) are left to the caller, and RemoveIPC= acts only when
the unit stops.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import functools
import grp
import os
import pwd
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Settings systemd's manager acts on, not the process it starts.
MANAGER = {"Type", "NotifyAccess", "WatchdogSec", "Restart", "RestartSec", "ExecReload", "KillSignal",
           "TimeoutStopSec", "RemoveIPC"}
SANDBOX = {"User", "Group", "SupplementaryGroups", "ExecStart", "Environment", "UMask", "StateDirectory",
           "StateDirectoryMode", "ProtectSystem", "ReadWritePaths", "BindReadOnlyPaths", "ProtectHome",
           "PrivateTmp", "PrivateDevices", "PrivateMounts", "PrivateIPC", "PrivateUsers", "NoNewPrivileges",
           "CapabilityBoundingSet", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
           "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc", "ProcSubset",
           "RestrictAddressFamilies", "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber",
           "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
           "MemoryDenyWriteExecute"}
LISTS = {"SupplementaryGroups", "Environment", "StateDirectory", "ReadWritePaths", "BindReadOnlyPaths",
         "RestrictAddressFamilies", "SystemCallFilter"}

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_SLAVE, MS_RELATIME = 1 << 19, 1 << 21
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _unshare(flags: int, what: str) -> None:
    _check(_libc.unshare(flags), f"unshare {what}")


def _prctl(option: int, arg: int) -> int:
    zero = ctypes.c_ulong(0)
    return int(_libc.prctl(option, ctypes.c_ulong(arg), zero, zero, zero))


@dataclass
class Unit:
    """A unit's [Service] settings, drop-ins merged in, %i expanded."""

    settings: dict[str, list[str]] = field(default_factory=dict)

    def add(self, text: str, instance: str | None) -> None:
        """Merge one unit file or drop-in: lists grow, an empty assignment resets, the rest is replaced."""
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section != "[Service]":
                continue
            key, _, value = (part.strip() for part in line.partition("="))
            value = _expand(value, instance)
            if key not in MANAGER | SANDBOX:
                raise SystemExit(f"sandbox_exec: {key}= is not emulated (teach sandbox_exec.py what systemd does)")
            if not value:
                self.settings[key] = []
            elif key in LISTS:
                self.settings.setdefault(key, []).append(value)
            else:
                self.settings[key] = [value]

    def one(self, key: str, default: str = "") -> str:
        """The setting's value (the last assignment), or `default`."""
        values = self.settings.get(key) or [default]
        return values[-1]

    def flag(self, key: str) -> bool:
        """A boolean setting."""
        return self.one(key, "no").lower() in ("1", "yes", "true", "on")

    def words(self, key: str) -> list[str]:
        """A list setting, split into its space-separated words."""
        return [w for value in self.settings.get(key, []) for w in shlex.split(value)]


def _expand(value: str, instance: str | None) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "%" and i + 1 < len(value):
            spec = value[i + 1]
            if spec == "%":
                out.append("%")
            elif spec == "i" and instance is not None:
                out.append(instance)
            else:
                raise SystemExit(f"sandbox_exec: specifier %{spec} is not emulated")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Identity:
    """Who the service runs as."""

    uid: int
    gid: int
    groups: list[int]
    name: str | None
    home: str


def identity(unit: Unit) -> Identity:
    """User=, Group= and SupplementaryGroups=, plus the user's groups from /etc/group, as systemd resolves them."""
    user = unit.one("User", "root")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            raise SystemExit(f"sandbox_exec: no user {user}") from None
        uid, gid, name, home = int(user), int(user), None, "/"
    else:
        uid, gid, name, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
    group = unit.one("Group")
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    groups = os.getgrouplist(name, gid) if name else [gid]
    groups += [int(g) if g.isdigit() else grp.getgrnam(g).gr_gid for g in unit.words("SupplementaryGroups")]
    return Identity(uid, gid, sorted(set(groups)), name, home)


def state_directories(unit: Unit, who: Identity, root: Path) -> list[Path]:
    """Create StateDirectory= under `root` (systemd: /var/lib) as systemd does: the
    innermost directory owned by the user with StateDirectoryMode=, parents by root."""
    mode = int(unit.one("StateDirectoryMode", "0755"), 8)
    made = []
    for name in unit.words("StateDirectory"):
        path = root / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.mkdir(mode=mode, exist_ok=True)
        os.chown(path, who.uid, who.gid)
        path.chmod(mode)
        made.append(path)
    return made


@dataclass(frozen=True)
class Mount:
    """One entry of the mount namespace, applied in path order as systemd does."""

    path: str
    kind: str  # "tmpfs", "inaccessible", "bind", "readonly", "proc" or "dev"
    options: str = ""
    source: str | None = None  # what a bind mount shows, as the host sees it
    writable: bool = False


DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
TUNABLES = ("/proc/sys", "/proc/sysrq-trigger", "/proc/latency_stats", "/proc/mtrr", "/proc/apm",
            "/proc/acpi", "/proc/timer_stats", "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/sys")


def mounts(unit: Unit, states: list[Path]) -> list[Mount]:
    """The unit's mount namespace as a list of entries (not yet applied)."""
    out = [Mount(p, "bind", source=p, writable=True) for p in unit.words("ReadWritePaths")]
    out += [Mount(str(p), "bind", source=str(p), writable=True) for p in states]
    for spec in unit.words("BindReadOnlyPaths"):
        src, _, dst = spec.lstrip("-").partition(":")
        out.append(Mount(dst or src, "bind", source=src))
    if unit.flag("PrivateTmp"):
        out += [Mount(p, "tmpfs", "mode=1777", writable=True) for p in ("/tmp", "/var/tmp")]
    home = unit.one("ProtectHome", "no").lower()
    homes = [p for p in ("/home", "/root", "/run/user") if os.path.isdir(p)]
    if home in ("yes", "true", "1", "on"):
        out += [Mount(p, "inaccessible") for p in homes]
    elif home == "tmpfs":
        out += [Mount(p, "tmpfs", "mode=0755") for p in homes]
    elif home == "read-only":
        out += [Mount(p, "readonly") for p in homes]
    if unit.flag("PrivateDevices"):
        out.append(Mount("/dev", "dev", source="/dev", writable=True))
    proc = [o for o in (f"hidepid={unit.one('ProtectProc')}" if unit.one("ProtectProc") else "",
                        f"subset={unit.one('ProcSubset')}" if unit.one("ProcSubset", "all") != "all" else "") if o]
    if proc:
        out.append(Mount("/proc", "proc", ",".join(proc), writable=True))
    if unit.flag("ProtectKernelTunables"):
        out += [Mount(p, "readonly") for p in TUNABLES] + [Mount(p, "inaccessible") for p in
                                                          ("/proc/kallsyms", "/proc/kcore")]
    if unit.flag("ProtectKernelModules"):
        out += [Mount(p, "inaccessible") for p in ("/usr/lib/modules", "/lib/modules")]
    if unit.flag("ProtectKernelLogs"):
        out += [Mount(p, "inaccessible") for p in ("/proc/kmsg", "/dev/kmsg")]
    if unit.flag("ProtectControlGroups"):
        out.append(Mount("/sys/fs/cgroup", "readonly"))
    return sorted(out, key=lambda m: (m.path.count("/"), m.path))


def _private_dev(dev_fd: int) -> None:
    nodes = {name: os.open(f"/proc/self/fd/{dev_fd}/{name}", os.O_PATH | os.O_CLOEXEC) for name in DEVICES}
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    for name, fd in nodes.items():
        Path(f"/dev/{name}").touch(mode=0)
        _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
        os.close(fd)
    os.mkdir("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore"),
                         ("log", "/run/systemd/journal/dev-log")):
        os.symlink(target, f"/dev/{link}")


def _apply(m: Mount, fd: int | None, tmpfs: list[str], blank: int) -> bool:
    """Put one entry in place; False when its path does not exist here (systemd skips those too).
    A missing bind mount point is made only inside a tmpfs of this namespace, never on the host."""
    if m.kind == "dev":
        assert fd is not None
        _private_dev(fd)
        return True
    if m.kind == "proc":
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, m.options)
        return True
    if not os.path.lexists(m.path):
        if m.kind != "bind":
            return False
        if not _under(m.path, tmpfs):
            raise SystemExit(f"sandbox_exec: {m.path} does not exist, and systemd would create it on the host")
        os.makedirs(m.path)
    if m.kind == "bind":
        _mount(f"/proc/self/fd/{fd}", m.path, None, MS_BIND | MS_REC)
    elif m.kind == "readonly":
        _mount(m.path, m.path, None, MS_BIND | MS_REC)
    elif m.kind == "tmpfs":
        _mount("tmpfs", m.path, "tmpfs", MS_NOSUID | MS_NODEV, m.options)
    elif os.path.isdir(m.path):  # inaccessible
        _mount("tmpfs", m.path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=000")
    else:  # an inaccessible file: an empty one of mode 000 over it, as systemd's /run/systemd/inaccessible/reg
        _mount(f"/proc/self/fd/{blank}", m.path, None, MS_BIND)
    return True


def _mountpoints() -> list[tuple[str, int]]:
    """This namespace's mount points, outermost first, with their per-mount flags."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            points.append(target)
    flags = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
             os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}
    out = []
    for p in dict.fromkeys(points):
        try:
            have = os.statvfs(p).f_flag
        except OSError:
            continue  # covered by a later mount, or not reachable as the path says
        out.append((p, sum(ms for st, ms in flags.items() if have & st)))
    return sorted(out, key=lambda x: (x[0].count("/"), x[0]))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _make_readonly(roots: list[str], keep: list[str]) -> None:
    """Bind-remount every mount at or under `roots` read-only, except those at or under `keep`.
    MS_BIND with MS_REMOUNT changes only this namespace's mount, never the file system."""
    for path, flags in _mountpoints():
        if _under(path, roots) and not _under(path, keep):
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


def mount_namespace(unit: Unit, entries: list[Mount]) -> None:
    """Enter a mount namespace of our own and lay the unit's file system out in it."""
    _unshare(CLONE_NEWNS, "mount namespace")
    _mount(None, "/", None, MS_REC | MS_SLAVE)  # nothing done here reaches the host
    # Sources are opened before anything covers them, and in this namespace:
    # a bind mount from another namespace's mount is refused (EINVAL).
    fds = {m.source: os.open(m.source, os.O_PATH | os.O_CLOEXEC) for m in entries if m.source}
    # A mode 000 file to cover files with, on a tmpfs over /tmp that goes away below
    # (or stays under PrivateTmp='s, out of reach).
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700")
    os.close(os.open("/tmp/inaccessible", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0))
    fds["/tmp/inaccessible"] = os.open("/tmp/inaccessible", os.O_PATH | os.O_CLOEXEC)
    applied: list[Mount] = []
    for m in entries:
        tmpfs = [t.path for t in applied if t.kind == "tmpfs"]
        if _apply(m, fds.get(m.source or ""), tmpfs, fds["/tmp/inaccessible"]):
            applied.append(m)
    for fd in fds.values():
        os.close(fd)
    if "/tmp" not in (m.path for m in applied):
        _check(_libc.umount2(b"/tmp", MNT_DETACH), "umount /tmp")
    writable = [m.path for m in applied if m.writable]
    for m in applied:
        if not m.writable:
            _make_readonly([m.path], [w for w in writable if _under(w, [m.path]) and w != m.path])
    if unit.one("ProtectSystem", "no") == "strict":
        _make_readonly(["/"], ["/proc", "/sys", "/dev", *writable])
    elif unit.one("ProtectSystem", "no") != "no":
        raise SystemExit("sandbox_exec: only ProtectSystem=strict is emulated")


def private_users(who: Identity) -> None:
    """PrivateUsers=: a user namespace mapping root, the unit's user and group, and nothing else.
    Mapping needs CAP_SETUID outside it, so a child left outside writes the maps, as systemd's does."""
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_w)
        os.read(ready_r, 1)
        parent = os.getppid()
        for kind, ident in (("uid", who.uid), ("gid", who.gid)):
            lines = "0 0 1\n" + (f"{ident} {ident} 1\n" if ident != 0 else "")
            Path(f"/proc/{parent}/{kind}_map").write_text(lines)
        os._exit(0)
    os.close(ready_r)
    _unshare(CLONE_NEWUSER, "user namespace")
    os.write(ready_w, b"1")
    os.close(ready_w)
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise SystemExit("sandbox_exec: writing the user namespace's maps failed")


def become(unit: Unit, who: Identity) -> None:
    """Groups, user namespace, bounding set, user, no_new_privs and umask, in systemd's order."""
    os.setgroups(who.groups)
    os.setresgid(who.gid, who.gid, who.gid)
    if unit.flag("PrivateUsers"):
        private_users(who)
    if "CapabilityBoundingSet" in unit.settings:
        if unit.settings["CapabilityBoundingSet"]:
            raise SystemExit("sandbox_exec: only an empty CapabilityBoundingSet= is emulated")
        cap = 0
        while _prctl(PR_CAPBSET_DROP, cap) == 0:
            cap += 1
        if ctypes.get_errno() != errno.EINVAL:
            raise OSError(ctypes.get_errno(), "dropping the capability bounding set")
    os.setresuid(who.uid, who.uid, who.uid)
    # systemd implies NoNewPrivileges= for a non-root user with seccomp settings, as here.
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
    os.umask(int(unit.one("UMask", "0022"), 8))
    os.chdir("/")


def environment(unit: Unit, who: Identity, states: list[Path], notify: str | None) -> dict[str, str]:
    """The environment systemd gives a system service (nothing of the caller's own)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": who.home, "INVOCATION_ID": uuid.uuid4().hex, "SYSTEMD_EXEC_PID": str(os.getpid())}
    if who.name:
        env |= {"USER": who.name, "LOGNAME": who.name, "SHELL": pwd.getpwnam(who.name).pw_shell}
    if notify:
        env["NOTIFY_SOCKET"] = notify
    watchdog = unit.one("WatchdogSec")
    if watchdog and watchdog != "0":
        seconds = float(watchdog.removesuffix("s"))  # the units write plain seconds: "120s"
        env |= {"WATCHDOG_USEC": str(int(seconds * 1_000_000)), "WATCHDOG_PID": str(os.getpid())}
    if states:
        env["STATE_DIRECTORY"] = ":".join(str(p) for p in states)
    for assignment in unit.words("Environment"):
        key, _, value = assignment.partition("=")
        env[key] = value
    return env


def main(argv: list[str]) -> None:
    """Parse the unit, build its sandbox around this process, and exec ExecStart=."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("unit", type=Path)
    ap.add_argument("--drop-in", type=Path, action="append", default=[])
    ap.add_argument("--instance")
    ap.add_argument("--state-root", type=Path, default=Path("/var/lib"))
    ap.add_argument("--notify-socket")
    args = ap.parse_args(argv)
    unit = Unit()
    for path in [args.unit, *args.drop_in]:
        unit.add(path.read_text(), args.instance)
    command = shlex.split(unit.one("ExecStart"))
    if not command or command[0][0] in "-@+!:" or any("$" in word for word in command):
        raise SystemExit("sandbox_exec: only a plain ExecStart= (no prefixes, no $VARIABLES) is emulated")
    who = identity(unit)
    filters = seccomp_filters(unit)  # while systemd-analyze can still run
    states = state_directories(unit, who, args.state_root)
    env = environment(unit, who, states, args.notify_socket)
    mount_namespace(unit, mounts(unit, states))
    if unit.flag("ProtectHostname"):
        _unshare(CLONE_NEWUTS, "UTS namespace")
    if unit.flag("PrivateIPC"):
        _unshare(CLONE_NEWIPC, "IPC namespace")
    become(unit, who)
    for default, rules in filters:
        load_filter(default, rules)
    os.execve(command[0], command, env)


# --- seccomp, as systemd's src/shared/seccomp-util.c builds its filters ---

SCMP_ACT_KILL_PROCESS, SCMP_ACT_ALLOW = 0x80000000, 0x7FFF0000
SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 1, 2, 4, 6, 7
SCMP_FLTATR_CTL_NNP = 3
PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
S_ISUID, S_ISGID, O_CREAT = 0o4000, 0o2000, 0o100
SCHED_OTHER, SCHED_BATCH, SCHED_IDLE = 0, 3, 5
AF_MAX = 46  # systemd 252's af_max() on this kernel's headers


def errno_action(code: int) -> int:
    """SCMP_ACT_ERRNO(code)."""
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@dataclass(frozen=True)
class Rule:
    """One seccomp rule: an action for a system call, when every comparison (arg, op, a, b) holds."""

    action: int
    syscall: str
    compare: tuple[tuple[int, int, int, int], ...] = ()


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_exact_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                                 ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def load_filter(default: int, rules: list[Rule]) -> None:
    """Build one filter for the native architecture (others hit the bad-arch action: SystemCallArchitectures=native) and load it."""
    lib = _libseccomp()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        if lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) < 0:  # as systemd: no_new_privs is set apart
            raise OSError("seccomp_attr_set failed")
        for rule in rules:
            nr = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if nr < 0:
                continue  # not a system call on this architecture; systemd skips it too
            cmps = (_ArgCmp * max(1, len(rule.compare)))(*(_ArgCmp(*c) for c in rule.compare))
            rc = lib.seccomp_rule_add_exact_array(ctx, rule.action, nr, len(rule.compare), cmps)
            if rc == -errno.EDOM:
                continue  # known name, but not on this architecture
            if rc < 0:
                raise OSError(-rc, f"seccomp rule for {rule.syscall}: {os.strerror(-rc)}")
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls in a name or @group, as this machine's systemd defines the group."""
    if not name.startswith("@"):
        return frozenset({name})
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", name],
                         capture_output=True, text=True, check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip().split("#")[0].strip()
        if word:
            calls |= syscall_group(word)
    return frozenset(calls)


def allowed_syscalls(unit: Unit) -> set[str] | None:
    """SystemCallFilter='s allow list (None without one): the first assignment decides
    allow or deny, later ones add to or remove from it, @default is always in."""
    allowed: set[str] | None = None
    for value in unit.settings.get("SystemCallFilter", []):
        invert = value.startswith("~")
        if allowed is None:
            if invert:
                raise SystemExit("sandbox_exec: only an allow-list SystemCallFilter= is emulated")
            allowed = set(syscall_group("@default"))
        for word in value.lstrip("~").split():
            if ":" in word:
                raise SystemExit("sandbox_exec: SystemCallFilter= with :errno is not emulated")
            calls = syscall_group(word)
            allowed = allowed - calls if invert else allowed | calls
    return allowed


def _deny(calls: Iterable[str], *compare: tuple[int, int, int, int], code: int = errno.EPERM) -> list[Rule]:
    return [Rule(errno_action(code), call, compare) for call in sorted(calls)]


def address_family_rules(families: list[str]) -> list[Rule]:
    """RestrictAddressFamilies= as an allow list: socket() of any other family fails with EAFNOSUPPORT."""
    allowed = {int(getattr(socket, f)) for f in families}
    first, last = min(allowed), max(allowed)
    rules = _deny(["socket"], (0, SCMP_CMP_LT, first, 0), code=errno.EAFNOSUPPORT)
    rules += _deny(["socket"], (0, SCMP_CMP_GT, last, 0), code=errno.EAFNOSUPPORT)
    for af in range(first + 1, last):
        if af not in allowed:
            rules += _deny(["socket"], (0, SCMP_CMP_EQ, af, 0), code=errno.EAFNOSUPPORT)
    return rules


def namespace_rules() -> list[Rule]:
    """RestrictNamespaces=yes: no setns(), no unshare() or clone() of any namespace, and clone3()
    (whose flags a filter cannot read) answers ENOSYS so that libc falls back to clone()."""
    rules = _deny(["setns"]) + _deny(["clone3"], code=errno.ENOSYS)
    for flag in (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
                 CLONE_NEWUTS):
        rules += _deny(["unshare", "clone"], (0, SCMP_CMP_MASKED_EQ, flag, flag))
    return rules


def suid_sgid_rules() -> list[Rule]:
    """RestrictSUIDSGID=: no setuid or setgid bit set by chmod() or on a file created by open()."""
    rules = []
    for bit in (S_ISUID, S_ISGID):
        rules += _deny(["chmod", "fchmod"], (1, SCMP_CMP_MASKED_EQ, bit, bit))
        rules += _deny(["fchmodat"], (2, SCMP_CMP_MASKED_EQ, bit, bit))
        rules += _deny(["creat"], (1, SCMP_CMP_MASKED_EQ, bit, bit))
        rules += _deny(["open"], (1, SCMP_CMP_MASKED_EQ, O_CREAT, O_CREAT), (2, SCMP_CMP_MASKED_EQ, bit, bit))
        rules += _deny(["openat"], (2, SCMP_CMP_MASKED_EQ, O_CREAT, O_CREAT), (3, SCMP_CMP_MASKED_EQ, bit, bit))
    return rules


def feature_filters(unit: Unit) -> list[list[Rule]]:
    """The filters systemd loads before the system call filter, each with default action allow."""
    filters = []
    if unit.settings.get("RestrictAddressFamilies"):
        filters.append(address_family_rules(unit.words("RestrictAddressFamilies")))
    if unit.flag("MemoryDenyWriteExecute"):
        filters.append(_deny(["mmap"], (2, SCMP_CMP_MASKED_EQ, PROT_EXEC | PROT_WRITE, PROT_EXEC | PROT_WRITE))
                       + _deny(["mprotect", "pkey_mprotect"], (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
                       + _deny(["shmat"], (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)))
    if unit.flag("RestrictRealtime"):
        filters.append([r for p in range(SCHED_IDLE) if p not in (SCHED_OTHER, SCHED_BATCH)
                        for r in _deny(["sched_setscheduler"], (1, SCMP_CMP_EQ, p, 0))]
                       + _deny(["sched_setscheduler"], (1, SCMP_CMP_GT, SCHED_IDLE, 0)))
    if unit.flag("RestrictSUIDSGID"):
        filters.append(suid_sgid_rules())
    if unit.one("RestrictNamespaces", "no").lower() in ("yes", "true", "1", "on"):
        filters.append(namespace_rules())
    elif unit.one("RestrictNamespaces", "no").lower() not in ("no", "false", "0", "off"):
        raise SystemExit("sandbox_exec: only RestrictNamespaces=yes or no is emulated")
    for setting, calls in (("ProtectKernelTunables", ["_sysctl"]), ("ProtectKernelModules", ["@module"]),
                           ("ProtectKernelLogs", ["syslog"]), ("ProtectClock", ["@clock"]),
                           ("PrivateDevices", ["@raw-io"]), ("ProtectHostname", ["sethostname", "setdomainname"])):
        if unit.flag(setting):
            filters.append(_deny(set().union(*map(syscall_group, calls))))
    if unit.flag("LockPersonality"):
        current = _libc.personality(ctypes.c_ulong(0xFFFFFFFF))  # 0xffffffff only asks
        filters.append(_deny(["personality"], (0, SCMP_CMP_NE, current, 0)))
    return filters


def seccomp_filters(unit: Unit) -> list[tuple[int, list[Rule]]]:
    """The unit's seccomp filters as (default action, rules), in systemd's order: the system call filter last."""
    if unit.one("SystemCallArchitectures", "native") != "native":
        raise SystemExit("sandbox_exec: only SystemCallArchitectures=native is emulated")
    filters = [(SCMP_ACT_ALLOW, rules) for rules in feature_filters(unit)]
    allowed = allowed_syscalls(unit)
    if allowed is not None:
        code = unit.one("SystemCallErrorNumber")
        default = errno_action(getattr(errno, code)) if code else SCMP_ACT_KILL_PROCESS
        filters.append((default, [Rule(SCMP_ACT_ALLOW, call) for call in sorted(allowed)]))
    return filters


if __name__ == "__main__":
    main(sys.argv[1:])
