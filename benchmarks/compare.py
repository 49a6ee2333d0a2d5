"""Regression detection: the benchmark figures that are stable on a shared
machine (ratios, and CPU time per change; never absolute throughput),
compared with the ones recorded in benchmarks/baseline.json.

Each figure in the baseline states its tolerance: a factor and a slack. A
figure where lower is better degrades when it exceeds value x factor + slack;
one where higher is better, when it falls below value / factor - slack. A
figure with a `quick` tolerance is also checked by `scripts/bench --quick
--compare`, against the same value with that (wider) tolerance.

The baseline changes only by `scripts/bench --update-baseline`, which records
the values of a full run and keeps the tolerances already in the file (new
figures get the defaults below).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).resolve().parent / "baseline.json"
Results = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    """One baseline figure: where a run's results hold it, and its default tolerances."""

    key: str
    label: str
    better: str  # "lower" or "higher"
    tolerance: dict[str, float]  # {"factor": ..., "slack": ...} for a full run
    quick: dict[str, float] | None  # the same for --quick, or None: not measured by --quick
    get: Callable[[Results], float | None]
    step: str  # the benchmark step that measures it


def _cpu(kind: str) -> Callable[[Results], float | None]:
    return lambda r: float(r["cpu"]["clients"][kind]["cpu_us_per_change"])


def _ratio(name: str) -> Callable[[Results], float | None]:
    return lambda r: float(r["cpu"]["ratios"][name])


def _dead_ratio(variant: str) -> Callable[[Results], float | None]:
    return lambda r: float(r["deadletters"]["ratios"][f"{variant}/plain"])


def _oversize_small(policy: str) -> Callable[[Results], float | None]:
    return lambda r: float(r["oversize_small"]["ratios"][f"{policy}/default"])


def _oversize_rows(variant: str) -> Callable[[Results], float | None]:
    return lambda r: float(r["oversize_rows"]["vs_plain_300k"][variant]["cpu_per_mb"])


def _capture(i: int) -> Callable[[Results], float | None]:
    return lambda r: float(r["capture"][i]["dynasync_ratio"])


CPU_TOL, CPU_QUICK = {"factor": 1.3, "slack": 0.0}, {"factor": 1.5, "slack": 0.0}
FIGURES = [
    # Absolute CPU time is checked in full runs only, on the machine the baseline was
    # measured on. CI's quick check runs on a fresh machine of unknown speed beside
    # other load: there it holds the ratios to the raw loop, measured in the same run.
    Figure("cpu.sync_us", "sync CPU µs per change", "lower", CPU_TOL, None, _cpu("sync"), "cpu"),
    Figure("cpu.backfill_us", "backfill CPU µs per row", "lower", CPU_TOL, None, _cpu("backfill"), "cpu"),
    Figure("cpu.sync_per_raw", "sync CPU / raw signed-HTTP loop", "lower", CPU_TOL, CPU_QUICK,
           _ratio("sync/raw"), "cpu"),
    Figure("cpu.backfill_per_raw", "backfill CPU / raw signed-HTTP loop", "lower", CPU_TOL, CPU_QUICK,
           _ratio("backfill/raw"), "cpu"),
    Figure("latency.sync_16", "sync, 16 in flight / 1 (+20 ms)", "higher", {"factor": 1.5, "slack": 0.0},
           None, lambda r: float(r["latency"]["ratio"]["sync"]), "latency"),
    Figure("latency.backfill_16", "backfill, 16 in flight / 1 (+20 ms)", "higher",
           {"factor": 1.5, "slack": 0.0}, None, lambda r: float(r["latency"]["ratio"]["backfill"]), "latency"),
    Figure("budget.200_worst", "write budget 200/s: worst 2 s window, |achieved/configured - 1|", "lower",
           {"factor": 1.0, "slack": 0.05}, None, lambda r: r["budget_200"]["worst"], "budget_200"),
    Figure("budget.2000_worst", "write budget 2000/s: worst 2 s window, |achieved/configured - 1|", "lower",
           {"factor": 1.0, "slack": 0.05}, None, lambda r: r["budget_2000"]["worst"], "budget_2000"),
    Figure("throttle.requests_per_s", "requests/s during a 5 s total throttle", "lower",
           {"factor": 1.5, "slack": 0.5}, None, lambda r: float(r["throttle"]["requests_per_s"]), "throttle"),
    Figure("throttle.recovery_s", "seconds to >= 90% throughput after throttling", "lower",
           {"factor": 1.5, "slack": 1.0}, None, lambda r: r["throttle"]["recovery_s"], "throttle"),
    Figure("throttle_start.requests_per_s", "requests/s during a 5 s total throttle from the first write",
           "lower", {"factor": 1.5, "slack": 0.5}, None, lambda r: float(r["throttle_start"]["requests_per_s"]),
           "throttle_start"),
    Figure("throttle_start.recovery_s", "seconds to >= 90% of the unthrottled rate after a throttle from the start",
           "lower", {"factor": 1.5, "slack": 1.0}, None, lambda r: r["throttle_start"]["recovery_s"],
           "throttle_start"),
    Figure("backfill.rss_growth", "backfill peak RSS growth, small to large", "lower",
           {"factor": 1.0, "slack": 0.1}, None, lambda r: float(r["backfill"]["rss_growth"]), "backfill"),
    Figure("backlog.rss_growth", "backlog sync peak RSS growth, small to large", "lower",
           {"factor": 1.0, "slack": 0.1}, None, lambda r: float(r["backlog"]["rss_growth"]), "backlog"),
    Figure("replay.vs_loop", "replay on DynamoDB Local / hand-written loop", "higher",
           {"factor": 1.5, "slack": 0.0}, None, lambda r: float(r["replay"]["ratio"]), "replay"),
    Figure("backfill.vs_loop", "backfill on DynamoDB Local / hand-written loop", "higher",
           {"factor": 1.5, "slack": 0.0}, None, lambda r: float(r["backfill"]["speed_ratio"]), "backfill"),
    Figure("capture.bulk", "capture cost, bulk insert (with / without triggers)", "lower",
           {"factor": 1.25, "slack": 0.0}, None, _capture(0), "capture"),
    Figure("capture.autocommit", "capture cost, autocommit inserts", "lower",
           {"factor": 1.25, "slack": 0.0}, None, _capture(1), "capture"),
    Figure("capture.updates", "capture cost, updates by key", "lower",
           {"factor": 1.25, "slack": 0.0}, None, _capture(2), "capture"),
    Figure("capture.templates", "capture cost, orders under a key template over a non-key column", "lower",
           {"factor": 1.25, "slack": 0.0}, None, lambda r: float(r["capture_templates"][1]["ratio"]),
           "capture_templates"),
    Figure("cost.requests_per_change", "write requests per change, 500 hot keys", "lower",
           {"factor": 1.5, "slack": 0.001}, None, lambda r: float(r["cost"]["requests_per_change"]), "cost"),
    # The fleet's memory and idle CPU are its own process's, so steady on a shared machine; its
    # latencies depend on the other load, and only the targets in report.py judge them.
    Figure("fleet.peak_rss_mib", "fleet run (1,000 databases) peak RSS, MiB", "lower",
           {"factor": 1.25, "slack": 0.0}, None, lambda r: float(r["fleet"]["peak_mib"]), "fleet"),
    Figure("fleet.idle_cpu_pct", "fleet run (1,000 databases) idle CPU, % of one core", "lower",
           {"factor": 1.0, "slack": 2.0}, None, lambda r: float(r["fleet"]["idle"]["cpu_pct"]), "fleet"),
]
# Figure 12: each ratio is of two CPU figures measured side by side, so steady under other load.
FIGURES += [
    Figure(f"deadletters.{v}_per_plain", f"sync CPU per change {what} / without", "lower",
           {"factor": 1.0, "slack": 0.2}, None,
           _dead_ratio(v), "deadletters")
    for v, what in (("dead", "with 100,000 dead letters"), ("nullkey", "with NULL-keyed rows"))
]
# Figure 13: ratios of CPU figures measured side by side (full runs only: each part takes 25 to 45 s
# in --quick, more than CI's quick compare can spare). Memory is judged by its target in report.py.
FIGURES += [
    Figure(f"oversize_small.{p}_per_default", f'sync CPU per change of rows that fit, oversize = "{p}" / default',
           "lower", {"factor": 1.0, "slack": 0.2}, None, _oversize_small(p), "oversize_small")
    for p in ("compress", "s3")
] + [
    Figure(f"oversize_rows.{k}_per_plain", f"sync CPU per MB, 1 MB rows {what} / plain 300 KB rows", "lower",
           {"factor": 1.3, "slack": 0.0}, None, _oversize_rows(k), "oversize_rows")
    for k, what in (("compress_1m", "compressed"), ("s3_1m_stub", "to the zero-work S3 stand-in"))
]
BY_KEY = {f.key: f for f in FIGURES}


def quick_steps() -> set[str]:
    """The benchmark steps --quick --compare has to run."""
    return {f.step for f in FIGURES if f.quick is not None}


def limit(value: float, better: str, tolerance: dict[str, float]) -> float:
    """The worst a figure may measure before it counts as degraded."""
    factor, slack = tolerance.get("factor", 1.0), tolerance.get("slack", 0.0)
    return value * factor + slack if better == "lower" else value / factor - slack


def check(measured: float | None, entry: dict[str, Any], quick: bool) -> tuple[str, float | None]:
    """("ok" | "DEGRADED" | "skipped", the limit applied) for one figure."""
    tolerance = entry.get("quick") if quick else entry["tolerance"]
    if tolerance is None:
        return "skipped", None
    bound = limit(entry["value"], entry["better"], tolerance)
    if measured is None:
        return "DEGRADED", bound
    worse = measured > bound if entry["better"] == "lower" else measured < bound
    return ("DEGRADED" if worse else "ok"), bound


def measured(results: Results, key: str) -> tuple[bool, float | None]:
    """(whether the run measured the figure's step, its value there)."""
    fig = BY_KEY.get(key)
    if fig is None or fig.step not in results:
        return False, None
    return True, fig.get(results)


def compare(results: Results, baseline: dict[str, Any], quick: bool) -> tuple[str, bool]:
    """A table of every baseline figure beside this run's, and whether all held."""
    rows = [("figure", "baseline", "this run", "limit", "verdict")]
    ok = True
    for key, entry in baseline["figures"].items():
        ran, value = measured(results, key)
        verdict, bound = check(value, entry, quick) if ran else ("skipped", None)
        ok = ok and verdict != "DEGRADED"
        rows.append((entry["label"], f"{entry['value']:.3g}", "-" if value is None else f"{value:.3g}",
                     "-" if bound is None else f"{'<=' if entry['better'] == 'lower' else '>='} {bound:.3g}",
                     verdict if ran else "not run"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    kind = "quick tolerances" if quick else "full-run tolerances"
    head = f"Against {BASELINE.name} (measured {baseline.get('measured', '?')}, {kind}):"
    return "\n".join([head, *lines]), ok


def load(path: Path = BASELINE) -> dict[str, Any]:
    """The committed baseline."""
    return dict(json.loads(path.read_text()))


def code_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=BASELINE.parent.parent, capture_output=True, text=True)
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + (" with uncommitted changes in src/" if git("status", "--porcelain", "src") else "")


def update(results: Results, path: Path = BASELINE) -> dict[str, Any]:
    """Record this full run's figures as the baseline, keeping the tolerances already stated."""
    if results.get("quick"):
        raise SystemExit("the baseline comes from a full run, not --quick")
    old = load(path)["figures"] if path.exists() else {}
    figures: dict[str, Any] = {}
    for fig in FIGURES:
        ran, value = measured(results, fig.key)
        if not ran or value is None:
            raise SystemExit(f"cannot record {fig.key}: this run did not measure it")
        prior = old.get(fig.key, {})
        figures[fig.key] = {"label": fig.label, "value": round(value, 4), "better": fig.better,
                            "tolerance": prior.get("tolerance", fig.tolerance),
                            "quick": prior.get("quick", fig.quick)}
    doc = {"about": __doc__.split("\n\n")[1].replace("\n", " "),
           "measured": results.get("date"), "code": results.get("code") or code_version(),
           "machine": results.get("machine"), "figures": figures}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc
