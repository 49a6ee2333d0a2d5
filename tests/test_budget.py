"""The write budget: token buckets, the adaptive (AIMD) limit per target, budgets
sharing their adaptive limits, and the gauges and log lines that report them.
Time is a fake clock throughout, so no assertion depends on the machine's speed."""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import logging
import math
import re
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ddblocal import free_port
from fakes import FakeTarget, throttle_then_succeed
from unit_env import app_conn, make_app

from dynasync import budget as budget_module
from dynasync.budget import (
    ADDITIVE,
    FLOOR,
    HOLD,
    LIFT_AFTER,
    LOG_EVERY,
    PROBE_MAX,
    PROBE_START,
    RECOVER_EVERY,
    AdaptiveLimit,
    Budget,
    TokenBucket,
    units,
)
from dynasync.config import MetricsConfig
from dynasync.daemon import Daemon
from dynasync.exceptions import TargetUnavailableError
from dynasync.logs import FIELDS
from dynasync.metrics import Metrics
from dynasync.retry import Retrier
from dynasync.writer import Writer
from dynasync.writes import RowRef, Write


class FakeClock:
    """time.monotonic, moved by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Changes:
    """A Budget.watch listener that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, int]] = []

    def __call__(self, table: str, rate: float, in_flight: int) -> None:
        self.calls.append((table, rate, in_flight))


def ignore(_: AdaptiveLimit) -> None:
    pass


def unlimited_limit(clock: FakeClock, concurrency: int = 4) -> AdaptiveLimit:
    return AdaptiveLimit("t", concurrency, ignore, clock)


def sending_at(limit: AdaptiveLimit, clock: FakeClock, per_second: int, seconds: float = 1.0) -> None:
    """Unlimited requests going out at `per_second`, all succeeding; the last one `seconds` from now."""
    start = clock.now
    for i in range(1, round(per_second * seconds) + 1):
        clock.now = start + i / per_second  # not summed step by step: `seconds` is exact, not 0.99999...
        assert limit.delay(None) == 0.0
        limit.succeeded()


def probe(limit: AdaptiveLimit, clock: FakeClock) -> float:
    """The spacing the limit imposes between two sends."""
    clock.advance(60)
    assert limit.spacing() == 0.0  # long after the last send: no wait
    return limit.spacing()  # the next, at once: the spacing


def send(limit: AdaptiveLimit, clock: FakeClock, amount: float | None) -> None:
    """Wait as a lane does before a request goes out: for the bucket, then for the spacing."""
    clock.advance(limit.delay(amount))
    while (pause := limit.spacing()) > 0:
        clock.advance(pause)


# --- units -------------------------------------------------------------------


def test_units_are_started_kilobytes_and_a_delete_is_one() -> None:
    assert units(None) == 1
    assert units({"id": {"N": "1"}}) == 1
    assert units({"id": {"S": "x" * 1022}}) == 1  # "id" + 1022 characters: exactly 1 KB
    assert units({"id": {"S": "x" * 1023}}) == 2
    assert units({"id": {"B": b"x" * (10 * 1024)}}) == 11


# --- token bucket --------------------------------------------------------------


def drive(bucket: TokenBucket, clock: FakeClock, callers: int, amount: float, seconds: float) -> list[float]:
    """`callers` senders each taking `amount` and waiting as told, for `seconds`; when each request went out."""
    start = clock.now
    ready = [(start, i) for i in range(callers)]
    sent: list[float] = []
    while ready:
        at, i = heapq.heappop(ready)
        clock.now = at
        if at >= start + seconds:
            continue
        go = at + bucket.reserve(amount)
        if go < start + seconds:
            sent.append(go)
            heapq.heappush(ready, (go, i))
    return sent


@pytest.mark.parametrize("rate", [200.0, 2000.0])
@pytest.mark.parametrize("callers", [1, 8])
def test_the_bucket_holds_its_rate_over_any_two_seconds(rate: float, callers: int) -> None:
    clock = FakeClock()
    start = clock.now
    bucket = TokenBucket(rate, clock=clock)
    amount = 25.0
    sent = drive(bucket, clock, callers, amount, 10.0)
    # Overall: the configured rate, plus at most the initial burst.
    achieved = len(sent) * amount / 10.0
    assert rate * 0.98 <= achieved <= rate + bucket.burst / 10.0 + amount / 10.0
    # The target: within 10% over any 2 s window after the first second.
    for offset in range(10, 81):
        lo = start + offset / 10
        in_window = sum(amount for t in sent if lo <= t < lo + 2.0)
        assert abs(in_window / 2.0 - rate) <= rate * 0.10, (offset, in_window)


def test_the_bucket_lends_a_burst_then_charges_the_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, clock=clock)  # burst: a tenth of a second's worth
    assert bucket.burst == 10.0
    assert bucket.reserve(10.0) == 0.0
    assert bucket.reserve(50.0) == pytest.approx(0.5)  # 50 units in debt at 100/s
    assert bucket.reserve(50.0) == pytest.approx(1.0)  # callers queue behind the debt
    clock.advance(1.0)
    assert bucket.reserve(0.0) == pytest.approx(0.0)
    clock.advance(3600)  # an idle hour saves no more than the burst
    assert bucket.reserve(10.0) == 0.0
    assert bucket.reserve(10.0) == pytest.approx(0.1)


def test_a_new_rate_applies_from_then_on() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, clock=clock)
    bucket.reserve(10.0)
    bucket.set_rate(50.0)
    assert (bucket.rate, bucket.burst) == (50.0, 5.0)
    assert bucket.reserve(50.0) == pytest.approx(1.0)
    clock.advance(1.0)
    bucket.set_rate(200.0)  # the debt paid at the old rate stays paid
    assert bucket.reserve(200.0) == pytest.approx(1.0)


# --- adaptive limit --------------------------------------------------------------


def test_a_limit_is_unlimited_until_dynamodb_throttles() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock)
    sending_at(limit, clock, 1000)
    assert (limit.rate, limit.state, limit.window) == (None, "unlimited", 4)


def test_the_first_throttle_halves_the_rate_reached_and_the_window() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock)
    sending_at(limit, clock, 40)  # 40 requests of 25 units: 1,000 units/s
    limit.throttled(25.0)
    assert limit.rate == 500.0 and limit.window == 2 and limit.state == "throttled"
    assert probe(limit, clock) == PROBE_START


def test_requests_in_flight_when_the_rate_was_cut_do_not_cut_it_again() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=16)
    sending_at(limit, clock, 40)
    sent = [limit.now() for _ in range(16)]  # sixteen requests out at once, all throttled
    clock.advance(0.02)
    for at in sent:
        limit.throttled(25.0, at)
    assert limit.rate == 500.0 and limit.window == 8  # one cut, not sixteen
    clock.advance(0.5)
    limit.throttled(25.0, limit.now())  # a request sent under the new rate cuts again
    assert limit.rate == 250.0 and limit.window == 4


def test_the_retries_of_requests_in_flight_are_spaced_out_not_sent_together() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=4)
    sending_at(limit, clock, 40)
    sent = [limit.now() for _ in range(4)]
    clock.advance(0.02)
    for at in sent:
        limit.throttled(25.0, at)
    waiting = 4  # four lanes retry at once
    sends = []
    while waiting:
        pauses = [limit.spacing() for _ in range(waiting)]  # each asks; the first due one goes
        if 0.0 in pauses:
            sends.append(clock.now)
            waiting -= 1
        clock.advance(min([p for p in pauses if p > 0] or [0.0]))
    assert [b - a for a, b in itertools.pairwise(sends)] == pytest.approx([PROBE_START] * 3)


def test_a_throttle_answered_while_a_lane_waits_spaces_its_send_further_out() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=4)
    sending_at(limit, clock, 40)
    limit.throttled(25.0)
    assert probe(limit, clock) == PROBE_START  # one request out; a second lane waits PROBE_START
    at = limit.now()
    clock.advance(0.1)
    limit.throttled(25.0, at)  # the first is throttled too: probes twice as far apart
    assert limit.spacing() == pytest.approx(2 * PROBE_START - 0.1)


def test_requests_older_than_a_second_do_not_count_toward_the_rate_reached() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock)
    sending_at(limit, clock, 40)
    clock.advance(5)
    sending_at(limit, clock, 4)  # 100 units/s lately
    limit.throttled(25.0)
    assert limit.rate == FLOOR * 2 and limit.window == 2  # at least FLOOR * 2: halved, never below FLOOR


def test_throttling_halves_down_to_the_floor_and_spaces_probes_further_apart() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=8)
    sending_at(limit, clock, 80)  # 2,000 units/s
    rates, windows, probes = [], [], []
    for _ in range(8):
        limit.throttled(25.0)
        rates.append(limit.rate)
        windows.append(limit.window)
        probes.append(probe(limit, clock))
    assert rates == [1000.0, 500.0, 250.0, 125.0, 62.5, 31.25, FLOOR, FLOOR]
    assert windows == [4, 2, 1, 1, 1, 1, 1, 1]
    assert probes == [PROBE_START, PROBE_MAX, PROBE_MAX, PROBE_MAX, PROBE_MAX, PROBE_MAX, PROBE_MAX, PROBE_MAX]


def test_recovery_doubles_back_to_the_ceiling_then_grows_additively() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=8)
    sending_at(limit, clock, 40)
    for _ in range(6):
        limit.throttled(25.0)  # 1,000 units/s when throttling began
    assert limit.rate == FLOOR and limit.window == 1
    limit.succeeded()  # too soon after the last change: nothing moves, but throttling is over
    assert limit.rate == FLOOR and limit.state == "recovering" and probe(limit, clock) == 0.0
    steps = []
    while limit.state != "recovered":
        clock.advance(RECOVER_EVERY * 1.001)  # a hair more, whatever the float rounding
        limit.succeeded()
        steps.append((limit.rate, limit.window))
    assert steps == [(50.0, 2), (100.0, 4), (200.0, 8), (400.0, 8), (800.0, 8), (1000.0, 8)]
    clock.advance(1.0)
    limit.succeeded()
    assert limit.rate == pytest.approx(1050.0)  # +5% of the rate a second, above the ceiling
    clock.advance(0.5)
    limit.succeeded()
    assert limit.rate == pytest.approx(1050.0 * 1.025)


def test_a_total_throttle_episode_costs_few_requests_and_recovery_takes_seconds() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock)
    sending_at(limit, clock, 40)  # 1,000 units/s, in requests of 25 units
    start, sent = clock.now, []
    while clock.now < start + 5.0:  # 5 s of DynamoDB throttling everything
        send(limit, clock, 25.0 if limit.rate is not None else None)
        sent.append(clock.now)
        limit.throttled(25.0)
    assert len([t for t in sent if t < start + 5.0]) <= 10  # at most 2 a second
    end = clock.now
    while limit.rate is not None and limit.rate < 1000.0:
        send(limit, clock, 25.0)
        limit.succeeded()
    assert clock.now - end <= 5.0 and limit.window == 4


def first_requests_throttled(limit: AdaptiveLimit, clock: FakeClock, lanes: int = 4) -> None:
    """`lanes` requests of 25 units sent at once, as a pass starts, all throttled."""
    sent = []
    for _ in range(lanes):
        assert limit.delay(None) == 0.0 and limit.spacing() == 0.0
        sent.append(limit.now())
    clock.advance(0.02)  # the round trip
    for at in sent:
        limit.throttled(25.0, at)


def throttled_for(limit: AdaptiveLimit, clock: FakeClock, seconds: float) -> int:
    """DynamoDB throttling every request for `seconds`, retried as the limit lets them go; the requests sent."""
    end, requests = clock.now + seconds, 0
    while clock.now < end:
        send(limit, clock, 25.0 if limit.rate is not None else None)
        at = limit.now()
        requests += 1
        clock.advance(0.02)
        limit.throttled(25.0, at)
    return requests


def recovering_until(limit: AdaptiveLimit, clock: FakeClock, done: Callable[[AdaptiveLimit], bool],
                     most: float = 120.0) -> float:
    """Requests of 25 units sent one after another as fast as the limit lets them go, every one
    accepted, until `done` says so (or `most` seconds); the seconds that took."""
    start = clock.now
    while not done(limit) and clock.now - start < most:
        send(limit, clock, 25.0 if limit.rate is not None else None)
        limit.succeeded()
    return clock.now - start


def allows(rate: float) -> Callable[[AdaptiveLimit], bool]:
    """Whether a limit lets writes go at `rate` units/s."""
    return lambda limit: limit.rate is None or limit.rate >= rate


@pytest.mark.parametrize("per_second", [0, 2, 160], ids=["nothing-sent-yet", "a-trickle-for-a-minute",
                                                         "4000-units-a-second-for-a-minute"])
def test_after_a_total_throttle_the_limit_allows_the_unthrottled_rate_within_5_s(per_second: int) -> None:
    # A new on-demand table takes 4,000 writes/s at once; here it throttles the first
    # burst and everything for 5 s. Whatever the rate before (none, a trickle, full
    # speed), the limit must let 4,000 units/s through within 5 s of the throttling's end.
    clock = FakeClock()
    limit = unlimited_limit(clock)
    sending_at(limit, clock, per_second, 60.0)
    first_requests_throttled(limit, clock)
    assert throttled_for(limit, clock, 5.0) <= 10  # the throttle still costs few requests
    assert recovering_until(limit, clock, allows(4000.0)) <= 5.0
    assert limit.window == 4


def test_throttled_from_the_first_request_the_limit_is_lifted_within_5_s_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    # No rate was ever measured unthrottled, so nothing says where the table's capacity
    # is: once requests go through, the limit doubles until it is lifted altogether.
    caplog.set_level(logging.INFO, logger=budget_module.__name__)
    clock = FakeClock()
    limit = Budget(None, 4, clock).limit("orders")
    first_requests_throttled(limit, clock)
    throttled_for(limit, clock, 5.0)
    assert recovering_until(limit, clock, lambda x: x.rate is None) <= 5.0
    assert (limit.state, limit.window) == ("unlimited", 4)
    lines = limit_lines(caplog)
    assert [line["state"] for line in lines].count("recovered") == 1
    assert lines[-1] == {"table": "orders", "units_per_second": None, "in_flight": 4, "state": "recovered"}


def test_a_rate_reached_before_a_second_of_unthrottled_sending_is_no_ceiling() -> None:
    # Half a second of sending, or a burst after an idle spell, is not a rate the table
    # took: doubling goes past it instead of stopping there to grow by 5% a second.
    for warm_up in ("half a second", "idle"):
        clock = FakeClock()
        limit = unlimited_limit(clock)
        if warm_up == "idle":
            sending_at(limit, clock, 40)
            clock.advance(5)
            first_requests_throttled(limit, clock)  # 100 units in the last second
        else:
            sending_at(limit, clock, 40, 0.5)
            limit.throttled(25.0)  # 20 requests of 25 units in the last second: 500
        reached = 2 * limit.rate  # type: ignore[operator]
        recovering_until(limit, clock, allows(4 * reached))
        assert limit.state == "recovering", warm_up  # not "recovered" at the rate reached


def test_a_ceiling_held_without_throttling_gives_way_to_doubling_then_the_limit_is_lifted(
        caplog: pytest.LogCaptureFixture) -> None:
    # Where throttling began is only a guess at the table's capacity: held there for
    # HOLD seconds without a throttle, it has moved (on-demand scaling, a provisioned
    # table raised), so the limit doubles again and LIFT_AFTER doublings on is lifted.
    caplog.set_level(logging.INFO, logger=budget_module.__name__)
    clock = FakeClock()
    limit = Budget(None, 4, clock).limit("orders")
    sending_at(limit, clock, 40)  # 1,000 units/s for a second: a rate the table took
    limit.throttled(25.0)
    recovering_until(limit, clock, lambda x: x.state == "recovered")
    assert limit.rate == 1000.0
    reached, rates = clock.now, []
    while limit.rate is not None and clock.now - reached < 10:
        clock.advance(RECOVER_EVERY * 1.001)
        limit.succeeded()
        rates.append(limit.rate)
    growth = [b / a if a is not None and b is not None else math.inf for a, b in itertools.pairwise([1000.0, *rates])]
    held = list(itertools.takewhile(lambda g: g < 1.01, growth))  # 5% a second: 0.5% a step
    assert len(held) == pytest.approx(HOLD / RECOVER_EVERY, abs=1)
    assert held == pytest.approx([1 + ADDITIVE * RECOVER_EVERY * 1.001] * len(held))
    last = rates[len(held) - 1]
    assert rates[len(held):] == [last * 2 ** i for i in range(1, LIFT_AFTER + 1)] + [None]
    assert limit.state == "unlimited" and limit.window == 4
    assert [line["state"] for line in limit_lines(caplog)] == ["throttled", "recovered"]  # the lift is no news


def test_waits_booked_while_throttled_end_with_the_probes_and_throttled_requests_leave_no_debt() -> None:
    # Lanes book their wait for the rate before queueing for a slot, and never ask
    # again: at the floor, four of them booked 1 to 4 s, so a lane still slept
    # seconds after throttling ended and the limit was lifted, stalling its pass.
    clock = FakeClock()
    limit = unlimited_limit(clock)
    first_requests_throttled(limit, clock)
    for _ in range(3):
        limit.throttled(25.0)
    assert limit.rate == FLOOR
    clock.advance(10)
    waits = [limit.delay(25.0) for _ in range(4)]  # four lanes retry
    assert waits[0] == pytest.approx(0.9)  # 25 units at 25/s, less the 2.5 burst
    assert all(w <= PROBE_MAX for w in waits)  # the probes pace them, not the cut rate
    clock.advance(PROBE_MAX)
    limit.succeeded()  # throttling ends: 50 units/s, and what throttled requests took is not owed
    assert limit.delay(25.0) == pytest.approx(0.5)


def test_throttling_that_returns_during_recovery_cuts_the_limit_again() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock)
    first_requests_throttled(limit, clock)
    throttled_for(limit, clock, 5.0)
    recovering_until(limit, clock, allows(400.0))
    assert limit.state == "recovering"
    rate, window = limit.rate, limit.window
    at = limit.now()
    clock.advance(0.02)
    limit.throttled(25.0, at)
    assert limit.rate == rate / 2 and limit.window == max(1, window // 2)  # type: ignore[operator]
    assert limit.state == "throttled" and probe(limit, clock) == PROBE_START


def test_a_table_that_keeps_throttling_above_its_capacity_is_never_written_unlimited() -> None:
    # A provisioned table of 1,000 units/s, throttled from the first request: the limit
    # finds the capacity and stays under it, instead of being lifted back to a flood.
    clock = FakeClock()
    limit = unlimited_limit(clock)
    accepted: collections.deque[float] = collections.deque()
    first_requests_throttled(limit, clock)
    start, throttles, units_accepted = clock.now, 0, 0.0
    while clock.now < start + 30:
        send(limit, clock, 25.0 if limit.rate is not None else None)
        assert limit.rate is not None  # never lifted
        at = limit.now()
        while accepted and at - accepted[0] >= 1.0:
            accepted.popleft()
        clock.advance(0.001)
        if 25 * (len(accepted) + 1) > 1000:
            throttles += 1
            limit.throttled(25.0, at)
        else:
            accepted.append(at)
            units_accepted += 25
            limit.succeeded()
    assert throttles <= 2 * 30  # few throttled requests a second
    assert units_accepted / 30 >= 500.0  # at least half the capacity used


def test_the_window_bounds_requests_in_flight() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=2)
    stop = threading.Event()
    first, second = limit.slot(stop), limit.slot(stop)
    first.__enter__()
    second.__enter__()
    stop.set()  # a caller waiting for a slot gives up on stop
    with pytest.raises(TargetUnavailableError), limit.slot(stop):
        pass
    second.__exit__(None, None, None)
    with limit.slot(stop):  # a free slot is taken even when stopping: the caller checks stop itself
        pass
    first.__exit__(None, None, None)


def test_a_waiting_request_goes_out_when_a_slot_frees_and_throttling_shrinks_the_window() -> None:
    clock = FakeClock()
    limit = unlimited_limit(clock, concurrency=4)
    sending_at(limit, clock, 40)
    limit.throttled(25.0)
    assert limit.window == 2
    stop = threading.Event()
    held = [limit.slot(stop), limit.slot(stop)]
    for s in held:
        s.__enter__()
    entered = threading.Event()

    def third() -> None:
        with limit.slot(stop):
            entered.set()

    waiter = threading.Thread(target=third)
    waiter.start()
    assert not entered.wait(0.3)  # two in flight already fill the halved window
    held.pop().__exit__(None, None, None)
    assert entered.wait(10)
    waiter.join(10)
    held.pop().__exit__(None, None, None)


# --- budgets ---------------------------------------------------------------------


def test_an_unconfigured_budget_counts_units_only_once_a_limit_is_in_force() -> None:
    clock = FakeClock()
    b = Budget(None, 4, clock)
    assert not b.counts("t") and b.delay("t", None) == 0.0 and b.rate_limit("t") == math.inf
    b.limit("t").throttled(25.0)
    assert b.counts("t") and b.rate_limit("t") == FLOOR
    assert not b.counts("other")  # limits are per target


def test_a_budget_waits_for_the_stricter_of_its_bucket_and_the_adaptive_limit() -> None:
    clock = FakeClock()
    b = Budget(100.0, 4, clock)
    assert b.counts("t") and b.rate_limit("t") == 100.0
    assert b.delay("t", 10.0) == 0.0
    assert b.delay("t", 100.0) == pytest.approx(1.0)  # the configured bucket
    clock.advance(10)
    for _ in range(3):
        b.limit("t").throttled(100.0)
    assert b.rate_limit("t") == FLOOR  # the adaptive limit, now below the budget
    clock.advance(10)
    assert b.delay("t", 25.0) == pytest.approx(0.9)  # 25 units at 25/s, less the 2.5 burst


def test_the_backfill_budget_is_separate_but_shares_the_adaptive_limits() -> None:
    # The README: [backfill] max_write_rate is a separate budget; the adaptive
    # limits, which learn each table's capacity, are one per target for both.
    clock = FakeClock()
    sync = Budget(1000.0, 4, clock)
    backfill = sync.sharing(100.0)
    assert backfill.limit("t") is sync.limit("t") and backfill.concurrency == 4
    assert backfill.delay("t", 1000.0) == pytest.approx(9.9)  # its own 100 units/s
    assert sync.delay("t", 100.0) == 0.0  # the copy took nothing from sync's budget
    assert sync.delay("t", 1000.0) == pytest.approx(1.0)
    backfill.limit("t").throttled(25.0)  # a throttle the copy met slows sync too
    assert sync.limit("t").state == "throttled"
    # Half the rate reached: three requests of the last second, taken as 25 units each.
    assert sync.rate_limit("t") == backfill.rate_limit("t") == 37.5


def test_an_unlimited_backfill_budget_still_obeys_the_adaptive_limits() -> None:
    clock = FakeClock()
    sync = Budget(None, 4, clock)
    backfill = sync.sharing(None)
    assert backfill.bucket is None and backfill.delay("t", 10_000.0) == 0.0
    sync.limit("t").throttled(25.0)
    clock.advance(10)
    assert backfill.counts("t") and backfill.delay("t", 25.0) == pytest.approx(0.9)


# --- what watches the limits: the gauges and the log ---------------------------------


def test_watchers_hear_each_change_as_the_rate_in_force_and_the_window() -> None:
    clock = FakeClock()
    sync = Budget(400.0, 4, clock)
    backfill = sync.sharing(None)
    sync.limit("early")
    heard, heard_backfill = Changes(), Changes()
    sync.watch(heard)
    backfill.watch(heard_backfill)
    assert heard.calls == [("early", 400.0, 4)]  # targets written before watching are reported at once
    assert heard_backfill.calls == [("early", math.inf, 4)]  # +Inf: nothing limits the copy yet
    backfill.limit("t")  # a new target is reported on its first write
    assert heard.calls[-1] == ("t", 400.0, 4) and heard_backfill.calls[-1] == ("t", math.inf, 4)
    sending_at(sync.limit("t"), clock, 80)  # 2,000 units/s
    backfill.limit("t").throttled(25.0)
    # Each budget hears the rate it may send at: the lower of its bucket and the table's limit.
    assert heard.calls[-1] == ("t", 400.0, 2) and heard_backfill.calls[-1] == ("t", 1000.0, 2)
    sync.limit("t").throttled(25.0)
    sync.limit("t").throttled(25.0)
    assert heard.calls[-1] == ("t", 250.0, 1) and heard_backfill.calls[-1] == ("t", 250.0, 1)


def limit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [getattr(r, FIELDS) for r in caplog.records if r.getMessage() == "write rate limit"]


def test_the_log_gets_each_cut_and_the_recovery_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=budget_module.__name__)
    clock = FakeClock()
    limit = Budget(None, 8, clock).limit("orders")
    sending_at(limit, clock, 80)  # 2,000 units/s
    for _ in range(20):  # a storm: many throttled requests come back at once
        limit.throttled(25.0)
    assert limit_lines(caplog) == [{"table": "orders", "units_per_second": 1000.0, "in_flight": 4,
                                    "state": "throttled"}]
    clock.advance(LOG_EVERY)
    limit.throttled(25.0)  # the next cut after a second gives where the storm left the limit
    assert limit_lines(caplog)[-1] == {"table": "orders", "units_per_second": FLOOR, "in_flight": 1,
                                       "state": "throttled"}
    for _ in range(10):  # throttled again at the floor: nothing new to say
        clock.advance(PROBE_MAX)
        limit.throttled(25.0)
    assert len(limit_lines(caplog)) == 2
    clock.advance(LOG_EVERY)
    while limit.state != "recovered":  # doubling back is not logged; getting there is
        clock.advance(RECOVER_EVERY * 1.001)
        limit.succeeded()
    assert len(limit_lines(caplog)) == 3
    assert limit_lines(caplog)[-1] == {"table": "orders", "units_per_second": 2000.0, "in_flight": 8,
                                       "state": "recovered"}
    for _ in range(100):  # growth above it, and the lift after it, are for the gauge only
        clock.advance(RECOVER_EVERY)
        limit.succeeded()
    assert len(limit_lines(caplog)) == 3


def test_a_line_held_back_is_written_by_the_next_change_after_a_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=budget_module.__name__)
    clock = FakeClock()
    limit = Budget(None, 4, clock).limit("orders")
    sending_at(limit, clock, 40)
    limit.throttled(25.0)
    clock.advance(RECOVER_EVERY * 1.001)
    limit.succeeded()  # straight back to 1,000: recovered, but a line went out just now
    assert [line["state"] for line in limit_lines(caplog)] == ["throttled"]
    clock.advance(LOG_EVERY)
    limit.succeeded()  # growing: not news in itself, but it carries the held-back recovery
    lines = limit_lines(caplog)
    assert [line["state"] for line in lines] == ["throttled", "recovered"]
    assert lines[-1]["units_per_second"] == 1050.0


# --- the gauge, scraped ----------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(dynasync_write_[^ ]+) (\S+)$", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def test_a_scrape_after_a_throttled_write_shows_the_limit() -> None:
    fake = FakeTarget()
    fake.create_table("t", (("id", "N"),))
    fake.create_table("calm", (("id", "N"),))
    fake.fault = throttle_then_succeed(3)
    metrics, budget = Metrics(), Budget(None, 4)
    budget.watch(metrics.observe_write_limit)
    writer = Writer(fake, Retrier(10.0, sleep=lambda s: None), 4, budget)
    writes = [Write.put(RowRef("src", i), {"id": {"N": str(i)}}, ("id",)) for i in range(5)]
    writer.write("t", writes)
    writer.write("calm", writes)
    assert fake.requests == 5 and len(fake.items("t")) == 5
    port = free_port()
    server = metrics.serve(f"127.0.0.1:{port}")
    try:
        m = scrape(port)
    finally:
        server[0].shutdown()
        server[0].server_close()
    rate = m['dynasync_write_rate_limit{table="t"}']
    assert FLOOR <= rate < math.inf and m['dynasync_write_concurrency_limit{table="t"}'] >= 1
    assert m['dynasync_write_rate_limit{table="calm"}'] == math.inf  # never throttled: +Inf
    assert m['dynasync_write_concurrency_limit{table="calm"}'] == 4


def test_the_daemon_feeds_the_gauge_from_its_writes(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.config = dataclasses.replace(app.config, metrics=MetricsConfig(listen=f"127.0.0.1:{free_port()}"))
    daemon = Daemon(app)
    assert daemon.metrics is not None
    c = app_conn(app)
    c.executemany("INSERT INTO t VALUES (?, 'v')", [(i,) for i in range(30)])
    c.close()
    fake.fault = throttle_then_succeed(2)
    daemon._rescan()
    daemon._round()
    assert daemon.passes == 1 and len(fake.items("target-t")) == 30
    registry = daemon.metrics.registry
    rate = registry.get_sample_value("dynasync_write_rate_limit", {"table": "target-t"})
    assert rate is not None and FLOOR <= rate < math.inf
    app.close()
