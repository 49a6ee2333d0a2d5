"""Rows over DynamoDB's 400 KB item limit, under a table's `oversize` policy
(figure 13): what `compress` and `s3` cost, what they cost a table whose rows
all fit, and the memory of a pass replaying many 1 MB rows.

* `small` (13a): `dynasync sync` CPU per change of small rows (figure 2's
  table and changes) with `oversize = "compress"` and `"s3"` configured,
  beside the same changes under the default policy, measured as cpu.py
  measures `sync` (a child's CPU after its imports, at two sizes, the
  difference over the difference in changes, best of interleaved rounds).
  The S3 stand-in must receive nothing.
* `rows` (13b): the same method over rows of 1 MB of text that zlib
  compresses about 5x, under `compress`, and under `s3` against two S3
  stand-ins (s3stub.py, which does no work, and moto's standalone server),
  beside plain rows of 300 KB under the default policy: CPU ms and
  wall time per MB of row text, rows/s and MB/s.
* `memory` (13c): one `dynasync sync` of N pending 1 MB rows under `s3`
  (10,000; `--quick`: 500) against both zero-work stand-ins, its RSS sampled
  from /proc every 50 ms beside the items the DynamoDB stand-in has counted,
  and its peak RSS (ru_maxrss) beside that of a sync of N/10 such rows. A
  run whose RSS passes the cap (4 GiB: the machine is shared) is stopped
  there, and says so.

The DynamoDB stand-in is stubproc.py; for `s3` it keeps the items written
(--keep), so that dynasync's read-back before deleting objects finds each
item pointing to its object, and deletes none (checked).

Usage: cd benchmarks && ../.venv/bin/python bigrows.py [--quick] [--only small rows memory] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cpu
import harness  # noqa: F401  (puts tests/ on sys.path, for s3local)

MB = 1_000_000
DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, note TEXT)"
BUCKET = "dynasync-bench"
SMALL_POLICIES = ("dead-letter", "compress", "s3")
SMALL_TARGET = 1.05  # sync CPU per change of small rows, with a policy configured / without
RSS_CAP_MIB = 4096  # the memory run is stopped past this RSS: the machine is shared
GROWTH_TARGET = 1.2  # peak RSS of N rows / of N/10 rows (figure 5's bound)


@dataclass(frozen=True)
class BigVariant:
    """One side of 13b: rows of `row_bytes` under a policy, against an S3 stand-in (or none)."""

    name: str
    row_bytes: int
    policy: str
    s3: str | None = None  # "stub" or "moto"


BIG = (BigVariant("plain_300k", 300_000, "dead-letter"), BigVariant("compress_1m", MB, "compress"),
       BigVariant("s3_1m_stub", MB, "s3", "stub"), BigVariant("s3_1m_moto", MB, "s3", "moto"))


@dataclass(frozen=True)
class Sizes:
    """The step's sizes, at full size or --quick."""

    small: tuple[int, int]  # small-row changes (13a)
    small_repeats: int
    big: tuple[int, int]  # MB of row text at the two sizes of 13b (rows of 1 MB; 300 KB rows: 3.3 times as many)
    big_repeats: int
    memory: int  # 1 MB rows replayed in the memory run (13c); the reference is a tenth
    sample_every: int  # rows per RSS sample reported


FULL = Sizes((5_000, 50_000), 7, (20, 100), 3, 10_000, 1_000)
QUICK = Sizes((2_000, 20_000), 3, (10, 40), 2, 500, 50)


# --- rows of text that zlib compresses about 5x ---------------------------------


class Text:
    """Row text: slices of one pool of random words from a vocabulary of 56,
    which zlib (level 6) compresses about 5x; each row starts elsewhere."""

    def __init__(self, pool_bytes: int = 8 * MB) -> None:
        r = random.Random(13)
        words = ["".join(r.choices("abcdefghijklmnopqrstuvwxyz", k=r.randint(2, 9))) for _ in range(56)]
        self.pool = " ".join(r.choices(words, k=pool_bytes // 5))[:pool_bytes]

    def row(self, i: int, size: int) -> str:
        """Row i's text, `size` characters (ASCII: as many bytes)."""
        start = (i * 7_919_111) % (len(self.pool) - size)
        return self.pool[start : start + size]

    def ratio(self, size: int) -> float:
        """How much zlib (level 6) shrinks one row's text."""
        text = self.row(1, size).encode()
        return len(text) / len(zlib.compress(text, 6))


def empty_db(path: Path) -> None:
    """A WAL database with the empty table `items`; rows are inserted after `init` (pending_rows)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(DDL)
    conn.close()


def pending_rows(path: Path, rows: int, row_bytes: int, text: Text) -> None:
    """`rows` inserts waiting in the changelog, then a checkpoint (the snapshot is one file)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for lo in range(0, rows, 100):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                         ((i, f"item {i}", i % 100, text.row(i, row_bytes)) for i in range(lo, min(rows, lo + 100))))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


# --- configs and stand-ins --------------------------------------------------------


def config(path: Path, db: Path, endpoint: str, policy: str, s3_endpoint: str | None) -> Path:
    """A config of one table `items` under `policy`, with [s3] pointing to `s3_endpoint`."""
    from harness import write_config

    extra: dict[str, dict[str, Any]] = {}
    if s3_endpoint is not None:
        extra["s3"] = {"bucket": BUCKET, "endpoint_url": s3_endpoint, "region": cpu.REGION}
    written = write_config(path, db, endpoint, cpu.TABLE, **extra)
    written.write_text(written.read_text() + f'oversize = "{policy}"\n')
    return written


@dataclass
class Stands:
    """The stand-ins a step uses, started once and stopped together."""

    ddb: Any  # stubproc.StubProcess
    ddb_keep: Any  # the same, keeping items (--keep), for s3
    s3: dict[str, Any] = field(default_factory=dict)  # "stub": S3Stub, "moto": S3Local

    @classmethod
    def start(cls, moto: bool) -> Stands:
        """Both DynamoDB stand-ins, the zero-work S3 stand-in, and moto's server if asked."""
        from s3stub import S3Stub
        from stubproc import StubProcess

        stands = cls(StubProcess(), StubProcess(keep=True))
        try:
            stands.s3["stub"] = S3Stub()
            if moto:
                from s3local import S3Local

                stands.s3["moto"] = S3Local()
                import boto3

                boto3.client("s3", endpoint_url=stands.s3["moto"].endpoint,
                             region_name=cpu.REGION).create_bucket(Bucket=BUCKET)
        except BaseException:
            stands.close()
            raise
        return stands

    def s3_endpoint(self, which: str | None) -> str | None:
        """The endpoint of an S3 stand-in ("stub" or "moto"), or None."""
        return self.s3[which].endpoint if which else None

    def s3_puts(self) -> tuple[int, int]:
        """(PutObject, objects deleted) the zero-work S3 stand-in has counted."""
        c = self.s3["stub"].counts()
        return c["puts"], c["deleted"]

    def close(self) -> None:
        """Stop every stand-in started."""
        for s in (self.ddb, self.ddb_keep):
            s.close()
        for s in self.s3.values():
            s.close() if hasattr(s, "close") else s.stop()


# --- 13a: small rows under each policy --------------------------------------------


def small_setup(tmp: Path, policy: str, n: int, stands: Stands) -> cpu.Setup:
    """Figure 2's sync database at n changes, its table under `policy`."""
    from harness import make_db, run_dynasync

    db = tmp / f"small-{policy}-{n}.db"
    make_db(db, n)
    s3 = stands.s3_endpoint("stub") if policy == "s3" else None
    cfg = config(tmp / f"small-{policy}-{n}.toml", db, stands.ddb.endpoint, policy, s3)
    run_dynasync("init", "--config", str(cfg))
    cpu.pending_changes(db, n)
    template = tmp / f"small-{policy}-{n}.template"
    shutil.copyfile(db, template)
    return cpu.Setup([sys.executable, str(cpu.HERE), "--cli", "sync", "--config", str(cfg)], db, template)


def rounds(plan: dict[tuple[str, int], cpu.Setup], stub: Any, repeats: int, env: dict[str, str],
           check: Any = None) -> dict[str, cpu.Samples]:
    """Every setup run once per round, interleaved; the stand-in must count n items each time,
    and `check(name, n)`, when given, runs after each."""
    samples: dict[str, cpu.Samples] = {}
    for _ in range(repeats):
        for (name, n), setup in plan.items():
            setup.restore()
            cpu.forget_seen(env)
            before = stub(name).counts()["items"]
            samples.setdefault(name, cpu.Samples()).add(n, *cpu.run_once(setup.cmd, env))
            if (got := stub(name).counts()["items"] - before) != n:
                raise RuntimeError(f"{name} at {n}: the stand-in received {got} items, not {n}")
            if check is not None:
                check(name, n)
    return samples


def measure_small(s: Sizes, stands: Stands) -> dict[str, Any]:
    """13a: sync CPU per change of small rows under each policy, and each over the default's."""
    small, large = s.small
    puts = stands.s3_puts()
    with tempfile.TemporaryDirectory(prefix="bigrows-small-") as tmp:
        plan = {(p, n): small_setup(Path(tmp), p, n, stands) for n in s.small for p in SMALL_POLICIES}
        samples = rounds(plan, lambda _: stands.ddb, s.small_repeats, cpu.state_env(Path(tmp)))
    if stands.s3_puts() != puts:
        raise RuntimeError(f"small rows reached S3: {stands.s3_puts()} (before: {puts})")
    policies = {p: x.summary(small, large) for p, x in samples.items()}
    base = policies["dead-letter"]["cpu_us_per_change"]
    return {"sizes": [small, large], "repeats": s.small_repeats, "policies": policies,
            "ratios": {f"{p}/default": policies[p]["cpu_us_per_change"] / base for p in ("compress", "s3")},
            "target": SMALL_TARGET}


# --- 13b: rows of 1 MB under compress and s3, beside plain rows of 300 KB ---------


def big_setup(tmp: Path, v: BigVariant, n: int, stands: Stands, text: Text) -> cpu.Setup:
    """n pending inserts of rows of v.row_bytes, under v's policy, and the snapshot to restore."""
    from harness import run_dynasync

    db = tmp / f"{v.name}-{n}.db"
    empty_db(db)
    ddb = stands.ddb_keep if v.policy == "s3" else stands.ddb
    cfg = config(tmp / f"{v.name}-{n}.toml", db, ddb.endpoint, v.policy, stands.s3_endpoint(v.s3))
    run_dynasync("init", "--config", str(cfg))
    pending_rows(db, n, v.row_bytes, text)
    template = tmp / f"{v.name}-{n}.template"
    shutil.copyfile(db, template)
    return cpu.Setup([sys.executable, str(cpu.HERE), "--cli", "sync", "--config", str(cfg)], db, template)


def row_counts(v: BigVariant, s: Sizes) -> tuple[int, int]:
    """v's rows at the two sizes: the same MB of row text whatever the row size."""
    small, large = (round(mb * MB / v.row_bytes) for mb in s.big)
    return small, large


def per_mb(x: cpu.Samples, v: BigVariant, sizes: tuple[int, int]) -> dict[str, Any]:
    """CPU ms and wall ms per MB of row text, rows/s and MB/s, from the two sizes' best rounds."""
    small, large = sizes
    mb = (large - small) * v.row_bytes / MB
    cpu_s = min(x.cpu[large]) - min(x.cpu[small])
    wall_s = min(x.wall[large]) - min(x.wall[small])
    per_round = [(b - a) / mb * 1e3 for a, b in zip(x.cpu[small], x.cpu[large], strict=True)]
    return {"row_bytes": v.row_bytes, "policy": v.policy, "s3": v.s3, "cpu_ms_per_mb": cpu_s / mb * 1e3,
            "cpu_ms_range": [min(per_round), max(per_round)], "wall_ms_per_mb": wall_s / mb * 1e3,
            "mb_per_s": mb / wall_s, "rows_per_s": (large - small) / wall_s,
            "cpu_s": {str(n): c for n, c in x.cpu.items()}, "wall_s": {str(n): w for n, w in x.wall.items()}}


def measure_rows(s: Sizes, stands: Stands, text: Text) -> dict[str, Any]:
    """13b: each big-row variant's CPU and wall time per MB; S3 must receive each object, delete none."""
    by_name = {v.name: v for v in BIG}

    def check(name: str, n: int) -> None:
        if by_name[name].s3 == "stub":
            puts, deleted = stands.s3_puts()
            if puts - seen[0] != n or deleted:
                raise RuntimeError(f"{name} at {n}: S3 received {puts - seen[0]} objects, deleted {deleted}")
            seen[0] = puts

    seen = [stands.s3_puts()[0]]
    with tempfile.TemporaryDirectory(prefix="bigrows-rows-") as tmp:
        counts = [(v, row_counts(v, s)[i]) for i in (0, 1) for v in BIG]  # every variant small, then large
        plan = {(v.name, n): big_setup(Path(tmp), v, n, stands, text) for v, n in counts}
        stub = {v.name: stands.ddb_keep if v.policy == "s3" else stands.ddb for v in BIG}
        samples = rounds(plan, stub.__getitem__, s.big_repeats, cpu.state_env(Path(tmp)), check)
    variants = {v.name: {**per_mb(samples[v.name], v, row_counts(v, s)), "rows": row_counts(v, s)} for v in BIG}
    plain = variants["plain_300k"]
    return {"sizes_mb": list(s.big), "repeats": s.big_repeats, "compression": text.ratio(MB), "variants": variants,
            "vs_plain_300k": {k: {"cpu_per_mb": x["cpu_ms_per_mb"] / plain["cpu_ms_per_mb"],
                                  "mb_per_s": x["mb_per_s"] / plain["mb_per_s"]}
                              for k, x in variants.items() if k != "plain_300k"}}


# --- 13c: memory while many 1 MB rows replay under s3 -----------------------------


@dataclass
class Watched:
    """One sync watched from outside: RSS samples beside the items counted, and how it ended."""

    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (s from start, items, RSS MiB)
    peak_mib: float = 0.0  # ru_maxrss
    seconds: float = 0.0
    stopped: bool = False  # past the RSS cap, so killed


def rss_mib(pid: int) -> float:
    """A process's resident set now, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def watch(cmd: list[str], env: dict[str, str], stub: Any, cap_mib: float) -> Watched:
    """Run `cmd`, sampling its RSS and the stand-in's item count every 50 ms; stop it past the cap."""
    out = Watched()
    base = stub.counts()["items"]
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = rss_mib(p.pid)
            except OSError:  # it exited between the two calls: wait4 reaps it next
                continue
            out.samples.append((time.monotonic() - start, stub.counts()["items"] - base, rss))
            if rss > cap_mib and not out.stopped:
                out.stopped = True
                p.kill()
            time.sleep(0.05)
        out.seconds = time.monotonic() - start
        out.peak_mib = usage.ru_maxrss / 1024
        if os.waitstatus_to_exitcode(status) != 0 and not out.stopped:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
    out.samples.append((out.seconds, stub.counts()["items"] - base, out.samples[-1][2] if out.samples else 0.0))
    return out


def by_rows(w: Watched, every: int, total: int) -> list[list[float]]:
    """[rows replayed, the highest RSS sampled while the count was in (rows - every, rows]]
    every `every` rows, the first point at 0 rows (before any item arrived); a point the
    count jumped over gets the RSS of the sample that jumped."""
    points: list[list[float]] = []
    for edge in range(0, total + 1, every):
        low = edge - every if edge else -1
        inside = [rss for _, items, rss in w.samples if low < items <= edge]
        after = [rss for _, items, rss in w.samples if items > edge][:1]
        if inside or after:
            points.append([edge, round(max(inside or after), 1)])
    return points


def trace(w: Watched, step: float = 1.0) -> list[list[float]]:
    """[seconds, rows arrived, the highest RSS sampled] every `step` seconds of the run."""
    points: list[list[float]] = []
    for t, items, rss in w.samples:
        if not points or t >= points[-1][0] + step:
            points.append([round(t, 1), items, round(rss, 1)])
        else:
            points[-1][1], points[-1][2] = items, max(points[-1][2], round(rss, 1))
    return points


def measure_memory(s: Sizes, stands: Stands, text: Text, cap_mib: float = RSS_CAP_MIB) -> dict[str, Any]:
    """13c: a sync of N 1 MB rows under s3 against both zero-work stand-ins, watched,
    and the peak RSS of one of N/10 rows."""
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bigrows-memory-") as tmp:
        env = cpu.state_env(Path(tmp))
        for n in (s.memory // 10, s.memory):
            v = BigVariant(f"memory-{n}", MB, "s3", "stub")
            made = time.monotonic()
            setup = big_setup(Path(tmp), v, n, stands, text)
            setup.template.unlink() if setup.template else None  # one run: no snapshot needed
            made = time.monotonic() - made
            puts = stands.s3_puts()
            w = watch(setup.cmd, {**env, cpu.READY: os.devnull}, stands.ddb_keep, cap_mib)
            arrived = w.samples[-1][1]
            if not w.stopped and (arrived != n or stands.s3_puts()[0] - puts[0] != n):
                raise RuntimeError(f"memory at {n}: {arrived} items, {stands.s3_puts()[0] - puts[0]} objects")
            runs[str(n)] = {"rows": n, "arrived": arrived, "stopped_at_cap": w.stopped, "peak_mib": w.peak_mib,
                            "seconds": w.seconds, "rows_per_s": arrived / w.seconds, "setup_s": made,
                            "rss_by_rows": by_rows(w, s.sample_every if n == s.memory else max(1, n // 10), n),
                            "first_item_s": next((t for t, i, _ in w.samples if i > 0), None),
                            "trace": trace(w)}
            assert setup.db is not None
            for f in Path(tmp).glob(f"{v.name}.db*"):
                f.unlink()
    small, large = runs[str(s.memory // 10)], runs[str(s.memory)]
    return {"rows": s.memory, "row_bytes": MB, "cap_mib": cap_mib, "runs": runs,
            "growth": large["peak_mib"] / small["peak_mib"], "target": GROWTH_TARGET,
            "flat": not large["stopped_at_cap"] and large["peak_mib"] / small["peak_mib"] <= GROWTH_TARGET}


# --- the step ---------------------------------------------------------------------


PARTS = ("small", "rows", "memory")


def measure(quick: bool, part: str) -> dict[str, Any]:
    """One part of figure 13 ("small", "rows" or "memory"), with the machine's load average
    before and after it."""
    s = QUICK if quick else FULL
    load_before = list(os.getloadavg())
    stands = Stands.start(moto=part == "rows")
    try:
        if part == "small":
            out = measure_small(s, stands)
        elif part == "rows":
            out = measure_rows(s, stands, Text())
        else:
            out = measure_memory(s, stands, Text())
    finally:
        stands.close()
    return {**out, "load_before": load_before, "load_after": list(os.getloadavg())}


def table(r: dict[str, Any]) -> str:
    """The result as console text."""
    lines = []
    if "small" in r:
        sm = r["small"]
        lines.append(f"13a small rows, {sm['sizes'][0]:,} to {sm['sizes'][1]:,} changes, best of {sm['repeats']}:")
        lines += [f"  {p:<12} {c['cpu_us_per_change']:6.1f} µs/change ({c['cpu_us_range'][0]:.1f}-"
                  f"{c['cpu_us_range'][1]:.1f})" for p, c in sm["policies"].items()]
        lines.append("  ratios: " + "  ".join(f"{k} {v:.3f}x" for k, v in sm["ratios"].items()))
    if "rows" in r:
        rw = r["rows"]
        lines.append(f"13b big rows, {rw['sizes_mb'][0]} to {rw['sizes_mb'][1]} MB, best of {rw['repeats']} "
                     f"(text compresses {rw['compression']:.1f}x):")
        lines += [f"  {k:<12} {x['cpu_ms_per_mb']:6.1f} CPU ms/MB  {x['mb_per_s']:6.1f} MB/s  "
                  f"{x['rows_per_s']:6.1f} rows/s" for k, x in rw["variants"].items()]
    if "memory" in r:
        m = r["memory"]
        for n, run in m["runs"].items():
            lines.append(f"13c {int(n):,} rows of 1 MB under s3: peak {run['peak_mib']:.0f} MiB, "
                         f"{run['arrived']:,} arrived in {run['seconds']:.1f} s"
                         f"{' (STOPPED at the RSS cap)' if run['stopped_at_cap'] else ''}; RSS by rows: "
                         + ", ".join(f"{int(a)}: {b:.0f}" for a, b in run["rss_by_rows"]))
        lines.append(f"  growth {m['growth']:.2f}x, flat: {m['flat']}")
    return "\n".join(lines)


def main() -> int:
    """Measure and print; with --json also write the raw results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    result = {part: measure(args.quick, part) for part in args.only}
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
