"""docs/benchmarks.png: one panel per benchmark; a step the run left out
gets an empty panel saying so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

Results = dict[str, Any]


def capture(ax: Axes, r: Results) -> None:
    """Time with triggers over time without, beside sqlite-chronicle."""
    cap = r["capture"]
    x = range(len(cap))
    ax.bar([i - 0.2 for i in x], [c["dynasync_ratio"] for c in cap], 0.4, label="dynasync")
    ax.bar([i + 0.2 for i in x], [c["chronicle_ratio"] for c in cap], 0.4, label="sqlite-chronicle")
    for i, c in enumerate(cap):
        ax.hlines(c["target"], i - 0.4, i + 0.4, colors="red", linestyles="dashed")
    ax.set_xticks(list(x), ["bulk insert", "autocommit", "updates"][: len(cap)])
    ax.set_title("1. capture cost (with triggers / without; red: target)")
    ax.legend()


def cpu(ax: Axes, r: Results) -> None:
    """CPU µs per change of each client, with the targets drawn from the raw loop's."""
    c = r["cpu"]["clients"]
    names = ["sync", "backfill", "boto3", "raw"]
    labels = ["dynasync\nsync", "dynasync\nbackfill", "bare boto3\nloop", "raw signed-\nHTTP loop"]
    ax.bar(labels, [c[n]["cpu_us_per_change"] for n in names], color=["C0", "C0", "C7", "C7"])
    raw = c["raw"]["cpu_us_per_change"]
    ax.hlines([raw * 1.5], -0.4, 0.4, colors="red", linestyles="dashed", label="target: 1.5x / 1.3x raw")
    ax.hlines([raw * 1.3], 0.6, 1.4, colors="red", linestyles="dashed")
    ax.set_ylabel("client CPU µs per change")
    ax.set_title("2. CPU per change, zero-work stand-in")
    ax.legend()


def latency(ax: Axes, r: Results) -> None:
    """Changes/s against requests in flight behind 20 ms, with the 10x target at 16."""
    lt = r["latency"]
    for kind in ("sync", "backfill"):
        ax.plot(lt["inflight"], lt[kind], marker="o", label=f"dynasync {kind}")
    if 16 in lt["inflight"]:
        ax.plot([16], [lt["sync"][0] * 10], "r*", markersize=12, label="10x sync's 1-in-flight rate")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("requests in flight (max_concurrency)")
    ax.set_ylabel("changes/s")
    ax.set_title(f"3. latency hiding, +{lt['delay_ms']:.0f} ms per request")
    ax.legend()


def budget(ax: Axes, r: Results) -> None:
    """Units/s the stand-in counted, each second, over the configured rate."""
    for key in ("budget_200", "budget_2000"):
        if key in r and r[key].get("windows"):
            b = r[key]
            ax.plot([w[0] for w in b["windows"]], [w[1] for w in b["windows"]], marker=".",
                    label=f"{b['configured']:g} units/s")
    ax.axhspan(0.9, 1.1, color="green", alpha=0.15, label="within 10%")
    ax.set_ylim(0.5, 1.5)
    ax.set_xlabel("start of a 2 s window (s from the first write)")
    ax.set_ylabel("achieved / configured")
    ax.set_title("8. write budget ([dynamodb] max_write_rate), 2 s windows")
    ax.legend()


def _episode(ax: Axes, t: dict[str, Any], target: float, of: str, title: str) -> None:
    """Accepted changes/s and requests over time, the episode shaded, 90% of `target` dotted."""
    xs = [i * 0.25 for i in range(len(t["items_per_s"]))]
    ax.plot(xs, t["items_per_s"], label="accepted changes/s")
    ax.axvspan(*t["episode_at"], color="red", alpha=0.15, label="every write throttled")
    ax.axhline(0.9 * target, color="green", linestyle="dotted", label=f"90% of {of}")
    if t["recovery_s"] is not None:
        ax.axvline(t["episode_at"][1] + t["recovery_s"], color="green", label="recovered")
    ax.set_xlabel("seconds from the first write")
    ax.set_ylabel("changes/s")
    twin = ax.twinx()
    xr = [i * 0.25 for i in range(len(t["requests_per_bucket"]))]
    twin.plot(xr, [n * 4 for n in t["requests_per_bucket"]], color="C1", alpha=0.6, label="requests/s")
    twin.set_yscale("symlog")
    twin.set_ylabel("requests/s (per 0.25 s)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    twin.legend(loc="upper right")


def throttle(ax: Axes, r: Results) -> None:
    """A total-throttle episode mid-run."""
    t = r["throttle"]
    _episode(ax, t, t["before_per_s"], "the rate before", f"9. a {t['episode_s']:g} s total-throttle episode")


def throttle_start(ax: Axes, r: Results) -> None:
    """A total-throttle episode from the first write."""
    t = r["throttle_start"]
    _episode(ax, t, t["unthrottled_per_s"], "the rate unthrottled",
             f"9b. a {t['episode_s']:g} s total throttle from the first write")


def memory(ax: Axes, r: Results) -> None:
    """Peak RSS of backfill and backlog sync at both sizes."""
    labels, values = [], []
    for key in ("backfill", "backlog"):
        if key in r:
            labels += [f"{key} {n:,}" for n in r[key]["sizes"]]
            values += r[key]["rss_mib"]
    ax.bar(labels, values)
    ax.axhline(150, color="red", linestyle="dashed")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("4-5. memory (red: 150 MiB bound)")


def lag(ax: Axes, r: Results) -> None:
    """Commit-to-DynamoDB lag percentiles."""
    on, off = r["lag_watch"], r["lag_nowatch"]
    ax.bar(["watch on p50", "watch on p99", "watch off p50", "watch off p99"],
           [on["p50_ms"], on["p99_ms"], off["p50_ms"], off["p99_ms"]])
    ax.set_yscale("log")
    ax.set_ylabel("commit to DynamoDB (ms)")
    ax.set_title("6. lag at 50 commits/s")


def local(ax: Axes, r: Results) -> None:
    """dynasync over the hand-written loop on DynamoDB Local."""
    ax.bar(["replay (2b)", "backfill (4)"], [r["replay"]["ratio"], r["backfill"]["speed_ratio"]])
    ax.axhline(1.0, color="red", linestyle="dashed")
    ax.set_ylabel("dynasync / hand-written loop")
    ax.set_title("2b, 4. throughput on DynamoDB Local (red: 1.0x)")


def oversize_small(ax: Axes, r: Results) -> None:
    """Sync CPU per change of rows that fit, under each oversize policy, over the default's."""
    sm = r["oversize_small"]
    names = ["compress", "s3"]
    ax.bar([f'oversize =\n"{n}"' for n in names], [sm["ratios"][f"{n}/default"] for n in names])
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axhline(sm["target"], color="red", linestyle="dashed", label=f"target: {sm['target']:g}x")
    ax.set_ylim(min(0.8, *sm["ratios"].values()) - 0.05, max(1.3, *sm["ratios"].values()) + 0.05)
    ax.set_ylabel("sync CPU per change / default policy")
    ax.set_title("13a. rows that all fit: what a policy costs")
    ax.legend()


def oversize_rows(ax: Axes, r: Results) -> None:
    """CPU ms per MB of row text (bars) and MB/s (dots) of 1 MB rows beside plain 300 KB rows."""
    v = r["oversize_rows"]["variants"]
    names = ["plain_300k", "compress_1m", "s3_1m_stub", "s3_1m_moto"]
    labels = ["300 KB\nplain", "1 MB\ncompress", "1 MB s3\n(zero-work S3)", "1 MB s3\n(moto S3)"]
    ax.bar(labels, [v[n]["cpu_ms_per_mb"] for n in names], color=["C7", "C0", "C0", "C0"])
    ax.set_ylabel("client CPU ms per MB of rows (bars)")
    twin = ax.twinx()
    twin.plot(labels, [v[n]["mb_per_s"] for n in names], "o", color="C1", markersize=9)
    twin.set_ylabel("MB/s (dots)")
    twin.set_yscale("log")
    ax.set_title("13b. rows over 400 KB: CPU and throughput per MB")


def oversize_memory(ax: Axes, r: Results) -> None:
    """RSS over the run (lines) and rows arrived (dotted), 1 MB rows under s3, with the cap."""
    m = r["oversize_memory"]
    twin = ax.twinx()
    for i, (n, run) in enumerate(sorted(m["runs"].items(), key=lambda kv: int(kv[0]))):
        pts = run["trace"]
        stop = ", stopped at the cap" if run["stopped_at_cap"] else ""
        ax.plot([p[0] for p in pts], [p[2] for p in pts], color=f"C{i}", label=f"RSS, {int(n):,} rows{stop}")
        twin.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}", linestyle="dotted")
    ax.axhline(m["cap_mib"], color="red", linestyle="dashed", label=f"cap {m['cap_mib']:,.0f} MiB")
    ax.set_xlabel("seconds from the start of `dynasync sync`")
    ax.set_ylabel("RSS (MiB)")
    twin.set_ylabel("rows arrived (dotted)")
    ax.set_title('13c. memory replaying 1 MB rows, oversize = "s3"')
    ax.legend(loc="upper left")


PANELS: list[tuple[tuple[str, ...], Callable[[Axes, Results], None]]] = [
    (("capture",), capture), (("cpu",), cpu), (("latency",), latency),
    (("budget_200", "budget_2000"), budget), (("throttle",), throttle),
    (("throttle_start",), throttle_start), (("backfill", "backlog"), memory),
    (("lag_watch", "lag_nowatch"), lag), (("replay", "backfill"), local),
    (("oversize_small",), oversize_small), (("oversize_rows",), oversize_rows),
    (("oversize_memory",), oversize_memory),
]


def draw(r: Results, path: Path) -> None:
    """Every panel the results can fill, into one PNG."""
    fig, axes = plt.subplots(4, 3, figsize=(18, 18.5))
    flat = list(axes.flat)
    for ax, (needs, panel) in zip(flat, PANELS, strict=False):
        has = [k in r for k in needs]
        if all(has) or (any(has) and panel in (budget, memory)):
            panel(ax, r)
        else:
            ax.text(0.5, 0.5, f"{panel.__name__}: not run", ha="center", va="center")
            ax.set_axis_off()
    for ax in flat[len(PANELS):]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
