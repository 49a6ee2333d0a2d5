"""How dynasync paces its writes, against the zero-work DynamoDB stand-in in
its own process (stubproc.py), which answers after 20 ms as a real table's
round trip would:

* latency hiding: `sync` and `backfill` changes/s with 1 to 32 requests in
  flight ([dynamodb] max_concurrency);
* the write budget: a backlog synced under [dynamodb] max_write_rate, with
  the units the stand-in counted from the request bodies over time;
* a throttling episode: every BatchWriteItem refused for 5 s mid-run, the
  requests that cost, and the time until throughput is back;
* the same from the first write on (a new table, or one already at its
  capacity): no rate was reached before, so the time is until throughput is
  back at the rate of the same backlog synced unthrottled.

The analyses are pure functions of the stand-in's log, so they can be tested.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import cpu
from stubproc import StubProcess

TABLE = "stub-table"
DELAY = 0.020  # seconds per request at the stand-in
Write = list[float]  # [monotonic time, items, units, HTTP status], as stubproc logs it


def dynasync(command: str, config: Path) -> float:
    """Run `dynasync COMMAND --config CONFIG`; the seconds of work it reports."""
    from harness import run_dynasync  # sets the benchmark's credentials in os.environ

    return run_dynasync(command, "--config", str(config))[0]


def prepared(tmp: Path, name: str, rows: int, endpoint: str, pending: bool, **cfg: dict[str, Any]) -> Path:
    """A database of `rows` rows (and as many pending changes, if `pending`),
    initialised against `endpoint`; returns its config."""
    from harness import make_db, write_config

    db = tmp / f"{name}.db"
    make_db(db, rows)
    config = write_config(tmp / f"{name}.toml", db, endpoint, TABLE, **cfg)
    dynasync("init", config)
    if pending:
        cpu.pending_changes(db, rows)
    return config


def latency(tmp: Path, n: int, inflight: list[int], rounds: int = 2) -> dict[str, Any]:
    """Changes/s of `sync` (n pending changes) and `backfill` (n rows) per
    max_concurrency: as the stand-in saw them arrive (judged), and end to end
    as the command reports them (its start-up and first read included). The
    best of `rounds` interleaved rounds, against other load on the machine."""
    kinds = ("sync", "backfill", "sync_end_to_end", "backfill_end_to_end")
    best: dict[str, list[float]] = {k: [0.0] * len(inflight) for k in kinds}
    stub = StubProcess(DELAY)
    try:
        for _ in range(rounds):
            for i, w in enumerate(inflight):
                for command in ("sync", "backfill"):
                    config = prepared(tmp, f"lat-{command}-{w}", n, stub.endpoint, command == "sync",
                                      dynamodb={"max_concurrency": w})
                    seen = len(stub.log()["writes"])
                    secs = dynasync(command, config)
                    rate = arrival_rate(stub.log()["writes"][seen:])
                    best[command][i] = max(best[command][i], rate)
                    best[f"{command}_end_to_end"][i] = max(best[f"{command}_end_to_end"][i], n / secs)
                    for f in tmp.glob(f"lat-{command}-{w}.*"):
                        f.unlink()
    finally:
        stub.close()
    at = inflight.index(16) if 16 in inflight else -1
    ratio = {c: best[c][at] / best[c][0] for c in ("sync", "backfill")}
    return {"changes": n, "delay_ms": DELAY * 1000, "rounds": rounds, "inflight": inflight, **best,
            "at": inflight[at], "ratio": ratio}


def rate_limit(tmp: Path, rate: float, seconds: float) -> dict[str, Any]:
    """A backlog of about `seconds` worth of writes synced under [dynamodb] max_write_rate = rate."""
    n = int(rate * (seconds + 1))  # every change here is one unit
    stub = StubProcess(DELAY, units=True)
    try:
        config = prepared(tmp, f"rate-{rate:g}", n, stub.endpoint, True, dynamodb={"max_write_rate": rate})
        dynasync("sync", config)
        log = stub.log()
    finally:
        stub.close()
    (tmp / f"rate-{rate:g}.db").unlink()
    return {"configured": rate, "changes": n, **budget_accuracy(log["writes"], rate)}


def synced(tmp: Path, name: str, n: int, throttle: tuple[float, float] | None) -> dict[str, Any]:
    """The stand-in's log of a backlog of n changes synced with default settings,
    every write throttled for throttle[1] s from throttle[0] s after the first one."""
    stub = StubProcess(DELAY, throttle=throttle)
    try:
        config = prepared(tmp, name, n, stub.endpoint, True)
        dynasync("sync", config)
        return dict(stub.log())
    finally:
        stub.close()
        (tmp / f"{name}.db").unlink(missing_ok=True)


def throttle(tmp: Path, n: int, after: float, duration: float) -> dict[str, Any]:
    """A backlog of n changes synced while the stand-in throttles every write
    for `duration` s, from `after` s after the first one."""
    log = synced(tmp, "throttle", n, (after, duration))
    start, end = log["episode"]
    return {"changes": n, "after_s": after, "episode_s": duration, **episode(log["writes"], start, end)}


def throttle_start(tmp: Path, n: int, duration: float) -> dict[str, Any]:
    """A backlog of n changes synced while the stand-in throttles every write from
    the first one for `duration` s; beside it, the same backlog synced unthrottled."""
    unthrottled = steady_rate(synced(tmp, "unthrottled", n, None)["writes"])
    log = synced(tmp, "throttle-start", n, (0.0, duration))
    start, end = log["episode"]
    return {"changes": n, "episode_s": duration, **from_start(log["writes"], start, end, unthrottled)}


# --- analyses of the stand-in's log ---

def _sums(values: list[float]) -> list[float]:
    out = [0.0]
    for v in values:
        out.append(out[-1] + v)
    return out


def arrival_rate(writes: list[Write]) -> float:
    """Items/s from the first request's arrival to the last one's (whose items
    are left out: they arrive at the end of the span)."""
    times = sorted(w[0] for w in writes)
    return (sum(w[1] for w in writes) - max(writes, key=lambda w: w[0])[1]) / (times[-1] - times[0])


def series(times: list[float], amounts: list[float], t0: float, step: float) -> list[float]:
    """Amount per second in consecutive buckets of `step` seconds from t0."""
    buckets = [0.0] * (int((max(times) - t0) / step) + 1) if times else []
    for t, a in zip(times, amounts, strict=True):
        buckets[int((t - t0) / step)] += a / step
    return buckets


def budget_accuracy(writes: list[Write], configured: float, skip: float = 1.0, span: float = 2.0
                    ) -> dict[str, Any]:
    """Achieved units/s against the configured rate after the first `skip`
    seconds: over the whole run, and over every window of at least `span`
    seconds from one request to the first one `span` seconds later (the
    units of the requests in between, over the time between them)."""
    ok = sorted((w[0], w[2]) for w in writes if w[3] == 200)
    times, units = [t for t, _ in ok], [u for _, u in ok]
    sums = _sums(units)
    t0 = times[0]
    a = bisect.bisect_left(times, t0 + skip)
    out: dict[str, Any] = {"units": sums[-1], "seconds": times[-1] - t0,
                           "per_s": [round(x, 1) for x in series(times, units, t0, 1.0)]}
    if a >= len(times) - 1:
        return {**out, "achieved": None, "window_min": None, "window_max": None, "worst": None}
    out["achieved"] = (sums[-2] - sums[a]) / (times[-1] - times[a]) / configured
    ratios, starts = [], []
    for i in range(a, len(times)):
        j = bisect.bisect_left(times, times[i] + span, i + 1)
        if j >= len(times):
            break
        ratios.append((sums[j] - sums[i]) / (times[j] - times[i]) / configured)
        starts.append(times[i] - t0)
    # For the chart: the first window starting in each quarter second.
    picks = sorted({bisect.bisect_left(starts, q / 4) for q in range(int(starts[-1] * 4) + 1)} if starts else [])
    out["windows"] = [[round(starts[k], 2), round(ratios[k], 4)] for k in picks if k < len(starts)]
    out["window_min"] = min(ratios, default=None)
    out["window_max"] = max(ratios, default=None)
    out["worst"] = max((abs(r - 1) for r in ratios), default=None)
    return out


class Accepted:
    """The items DynamoDB accepted over time, from a stand-in's log."""

    def __init__(self, writes: list[Write]) -> None:
        ok = sorted((w[0], w[1]) for w in writes if w[3] == 200)
        self.times, self.items = [t for t, _ in ok], [n for _, n in ok]
        self._sums = _sums(self.items)

    def rate(self, lo: float, hi: float) -> float:
        """Items/s accepted in [lo, hi)."""
        t, sums = self.times, self._sums
        return (sums[bisect.bisect_left(t, hi)] - sums[bisect.bisect_left(t, lo)]) / (hi - lo)

    def back_at(self, end: float, target: float, window: float, threshold: float) -> float | None:
        """Seconds from `end` to the end of the first `window` (sliding by 50 ms) whose
        items/s reach `threshold` of `target`; None if none does."""
        t = end
        while target and t + window <= self.times[-1]:
            if self.rate(t, t + window) >= threshold * target:
                return t + window - end
            t += 0.05
        return None


def steady_rate(writes: list[Write]) -> float:
    """Accepted items/s from one second after the first write to the last one."""
    accepted, t0 = Accepted(writes), min(w[0] for w in writes)
    return accepted.rate(t0 + 1.0, accepted.times[-1])


def _throttled(writes: list[Write], start: float, end: float) -> dict[str, Any]:
    """Requests received during a throttling episode [start, end), and the run's series."""
    t0 = min(w[0] for w in writes)
    accepted = Accepted(writes)
    during = sum(1 for w in writes if start <= w[0] < end)
    requests = sorted(w[0] for w in writes)
    return {
        "requests_during": during, "requests_per_s": during / (end - start), "episode_at": [start - t0, end - t0],
        "items_per_s": [round(x) for x in series(accepted.times, accepted.items, t0, 0.25)],
        "requests_per_bucket": [round(x * 0.25) for x in series(requests, [1.0] * len(requests), t0, 0.25)],
    }


def episode(writes: list[Write], start: float, end: float, window: float = 0.5, threshold: float = 0.9
            ) -> dict[str, Any]:
    """Requests received during a throttling episode [start, end), the
    accepted items/s before it (from one second after the first write), and
    the time from its end to the end of the first `window` (sliding by 50 ms)
    whose items/s reach `threshold` of that rate again."""
    t0 = min(w[0] for w in writes)
    accepted = Accepted(writes)
    pre_from = max(t0 + 1.0, start - 2.0)
    before = accepted.rate(pre_from, start) if start > pre_from else 0.0
    return {"before_per_s": before, "recovery_s": accepted.back_at(end, before, window, threshold),
            **_throttled(writes, start, end)}


def from_start(writes: list[Write], start: float, end: float, unthrottled: float, window: float = 0.5,
               threshold: float = 0.9) -> dict[str, Any]:
    """Requests received during a throttling episode [start, end) that began
    with the first write, and the time from its end to the end of the first
    `window` (sliding by 50 ms) whose items/s reach `threshold` of
    `unthrottled`, the rate of the same backlog synced without throttling."""
    recovery = Accepted(writes).back_at(end, unthrottled, window, threshold)
    return {"unthrottled_per_s": unthrottled, "recovery_s": recovery, **_throttled(writes, start, end)}
