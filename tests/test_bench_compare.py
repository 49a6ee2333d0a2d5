"""The benchmark suite's own logic, without running a benchmark: regression
detection against the baseline, the analyses of the stand-in's log, and the
stand-in's count of write capacity units."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import flow  # noqa: E402
import stubproc  # noqa: E402


def entry(value: float, better: str, factor: float = 1.0, slack: float = 0.0,
          quick: dict[str, float] | None = None) -> dict[str, Any]:
    return {"label": "x", "value": value, "better": better,
            "tolerance": {"factor": factor, "slack": slack}, "quick": quick}


def test_limits_follow_the_direction_of_better() -> None:
    assert compare.limit(40.0, "lower", {"factor": 1.5}) == 60.0
    assert compare.limit(10.0, "higher", {"factor": 1.25}) == 8.0
    assert compare.limit(0.02, "lower", {"factor": 1.0, "slack": 0.05}) == pytest.approx(0.07)


def test_check_flags_only_degradation_beyond_tolerance() -> None:
    e = entry(40.0, "lower", 1.3, quick={"factor": 1.5})
    assert compare.check(51.0, e, quick=False)[0] == "ok"
    assert compare.check(53.0, e, quick=False)[0] == "DEGRADED"
    assert compare.check(59.0, e, quick=True)[0] == "ok"
    assert compare.check(80.0, e, quick=True)[0] == "DEGRADED"  # twice as slow
    assert compare.check(10.0, e, quick=True)[0] == "ok"  # faster is never a failure
    assert compare.check(None, e, quick=False)[0] == "DEGRADED"  # measured nothing
    assert compare.check(99.0, entry(1.0, "higher"), quick=True)[0] == "skipped"  # no quick tolerance


def cpu_results(sync_us: float) -> dict[str, Any]:
    clients = {k: {"cpu_us_per_change": v} for k, v in
               {"sync": sync_us, "backfill": 30.0, "raw": 20.0, "boto3": 60.0}.items()}
    ratios = {f"{a}/{b}": clients[a]["cpu_us_per_change"] / clients[b]["cpu_us_per_change"]
              for a in ("sync", "backfill") for b in ("raw", "boto3")}
    return {"quick": True, "cpu": {"clients": clients, "ratios": ratios}}


def test_quick_compare_catches_replay_twice_as_slow() -> None:
    baseline = {"measured": "today", "figures": {
        "cpu.sync_us": entry(30.0, "lower", 1.3, quick={"factor": 1.5}),
        "cpu.sync_per_raw": entry(1.5, "lower", 1.3, quick={"factor": 1.5}),
        "latency.sync_16": entry(10.0, "higher", 1.25),
    }}
    text, ok = compare.compare(cpu_results(33.0), baseline, quick=True)
    assert ok, text
    assert "not run" in text  # the latency figure: --quick --compare runs only the CPU step
    text, ok = compare.compare(cpu_results(60.0), baseline, quick=True)
    assert not ok and "DEGRADED" in text


def test_every_figure_has_a_direction_and_quick_steps_are_cheap() -> None:
    assert {f.better for f in compare.FIGURES} == {"lower", "higher"}
    assert compare.quick_steps() == {"cpu"}
    assert len(compare.BY_KEY) == len(compare.FIGURES)


def test_committed_baseline_states_a_tolerance_per_figure() -> None:
    doc = json.loads(compare.BASELINE.read_text())
    assert set(doc["figures"]) == set(compare.BY_KEY)
    for key, e in doc["figures"].items():
        assert e["better"] == compare.BY_KEY[key].better
        assert e["tolerance"]["factor"] >= 1.0 and e["tolerance"]["slack"] >= 0.0, key
        if e["quick"] is not None:
            assert e["quick"]["factor"] >= e["tolerance"]["factor"], key


def test_update_records_values_and_keeps_stated_tolerances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "baseline.json"
    figs = [compare.BY_KEY["cpu.sync_us"], compare.BY_KEY["cpu.backfill_us"]]
    monkeypatch.setattr(compare, "FIGURES", figs)
    path.write_text(json.dumps({"figures": {"cpu.sync_us": {"tolerance": {"factor": 9.0, "slack": 0.0}, "quick": None}}}))
    with pytest.raises(SystemExit):  # a quick run never becomes the baseline
        compare.update(cpu_results(33.0), path)
    doc = compare.update({**cpu_results(33.0), "quick": False, "code": "abc"}, path)
    assert doc["figures"]["cpu.sync_us"]["value"] == 33.0
    assert doc["figures"]["cpu.sync_us"]["tolerance"] == {"factor": 9.0, "slack": 0.0}  # kept
    assert doc["figures"]["cpu.backfill_us"]["tolerance"] == figs[1].tolerance  # the default for a new one
    assert json.loads(path.read_text()) == doc


def steady(rate: float, seconds: float, per_request: int = 25) -> list[list[float]]:
    step = per_request / rate
    return [[i * step, per_request, per_request, 200] for i in range(int(seconds / step))]


def test_budget_accuracy_of_an_exact_rate_and_of_a_burst() -> None:
    exact = flow.budget_accuracy(steady(200.0, 10.0), 200.0)
    assert exact["achieved"] == pytest.approx(1.0, abs=0.01)
    assert exact["worst"] == pytest.approx(0.0, abs=0.01)
    writes = steady(200.0, 10.0)
    burst = [w for w in writes if not 4.0 <= w[0] < 5.0] + [[4.5, 200, 200, 200]]  # one second's units at once
    assert flow.budget_accuracy(burst, 200.0)["worst"] > 0.05
    slow = flow.budget_accuracy(steady(150.0, 10.0), 200.0)
    assert slow["achieved"] == pytest.approx(0.75, abs=0.02) and slow["worst"] == pytest.approx(0.25, abs=0.02)
    assert flow.budget_accuracy(steady(200.0, 1.5), 200.0)["worst"] is None  # too short for a 2 s window


def test_episode_counts_requests_and_recovery() -> None:
    writes = [w for w in steady(4000.0, 20.0) if not 3.0 <= w[0] < 10.0]  # no success from 3 s to 10 s
    writes += [[3.0 + i * 0.5, 25, 25, 400] for i in range(10)]  # 10 throttled requests in the 5 s episode
    ep = flow.episode(writes, 3.0, 8.0)
    assert ep["requests_during"] == 10 and ep["requests_per_s"] == pytest.approx(2.0)
    assert ep["before_per_s"] == pytest.approx(4000.0, rel=0.02)
    assert ep["recovery_s"] == pytest.approx(2.5, abs=0.06)  # back at 10 s, plus the 0.5 s window
    never = [w for w in writes if w[0] < 8.0]
    assert flow.episode(never, 3.0, 8.0)["recovery_s"] is None


def test_from_start_measures_recovery_against_the_unthrottled_rate() -> None:
    unthrottled = steady(4000.0, 10.0)
    assert flow.steady_rate(unthrottled) == pytest.approx(4000.0, rel=0.02)
    # Throttled from the first write for 5 s, slow for 2 s, then at full rate.
    writes = [[i * 0.5, 25, 25, 400] for i in range(10)]
    writes += [[5.0 + i * 0.1, 25, 25, 200] for i in range(20)]  # 250 changes/s
    writes += [[7.0 + w[0], *w[1:]] for w in steady(4000.0, 5.0)]
    ep = flow.from_start(writes, 0.0, 5.0, 4000.0)
    assert ep["requests_during"] == 10 and ep["requests_per_s"] == pytest.approx(2.0)
    assert ep["recovery_s"] == pytest.approx(2.5, abs=0.06)  # full rate at 7 s, plus the 0.5 s window
    assert ep["episode_at"] == [0.0, 5.0]
    assert flow.from_start(writes[:30], 0.0, 5.0, 4000.0)["recovery_s"] is None  # never back at full rate


def test_stand_in_counts_units_by_dynamodbs_rule() -> None:
    small = {"id": {"N": "1"}, "name": {"S": "item 1"}}
    assert stubproc.item_units(small) == 1
    big = {"id": {"N": "1"}, "blob": {"S": "x" * 1500}}
    assert stubproc.item_units(big) == 2
    assert stubproc.number_size("12345") == 4 and stubproc.number_size("-0.00120") == 2
    body = json.dumps({"RequestItems": {"t": [{"PutRequest": {"Item": big}},
                                              {"DeleteRequest": {"Key": {"id": {"N": "2"}}}}]}}).encode()
    assert stubproc.body_units(body) == 3


def test_the_stand_ins_episode_starts_at_the_first_write_to_arrive() -> None:
    from_start = stubproc.Log(units=False, throttle=(0.0, 5.0))
    first, status = from_start.arrived()
    assert status == 400 and from_start.episode == [first, first + 5.0]  # throttled from the very first write
    _, again = from_start.arrived()
    assert again == 400
    mid_run = stubproc.Log(units=False, throttle=(3.0, 5.0))
    first, status = mid_run.arrived()
    assert status == 200 and mid_run.episode == [first + 3.0, first + 8.0]
