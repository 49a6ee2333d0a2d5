"""How fast dynasync may write.

Two limits apply to every BatchWriteItem, in write capacity units (one per
started KB of an item; a delete is one), shared by all of the process's
concurrent requests:

* the configured budget, a token bucket: [dynamodb] max_write_rate for sync,
  [backfill] max_write_rate for backfill and verify --repair;
* an adaptive limit per target table (AIMD). When DynamoDB throttles, the
  rate is halved and only one request at a time goes out, spaced further
  apart while throttling lasts, so a throttled table costs a few requests a
  second (and no wait for the rate is longer than those probes: one booked
  at the cut rate would outlast the throttling). After a success the rate
  doubles back quickly to where throttling began, then grows additively,
  for HOLD seconds, to find the table's capacity again. Where throttling
  began (the limit in force, or with none the rate reached) counts only
  after a second of writes going through unthrottled, never from a first
  burst; otherwise the last such rate stands. Without one, or once the
  limit has held there HOLD seconds without a throttle (the capacity moved:
  on-demand scaling, a provisioned table raised), it doubles on, and is
  lifted after LIFT_AFTER doublings. So whatever came before, the limit is
  gone within a few seconds of throttling ending, unless throttling returns.

Each change of an adaptive limit goes to the listeners of Budget.watch (the
metrics gauges) and to the log, which gets a line on each cut and on the
full recovery, at most one a second per table.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from dynasync.exceptions import TargetUnavailableError
from dynasync.logs import fields
from dynasync.values import Item, item_size

log = logging.getLogger(__name__)

FLOOR = 25.0  # units/s: the adaptive rate never goes below one full request a second
PROBE_START, PROBE_MAX = 0.5, 1.0  # seconds between requests while throttling lasts
RECOVER_EVERY = 0.1  # seconds between doublings after throttling ends
ADDITIVE = 0.05  # of the rate, per second, above the level throttling began at
HOLD = 2.0  # seconds of additive growth from there; then, unthrottled, the rate doubles again
LIFT_AFTER = 8  # doublings with no rate known to stop at, unthrottled: then the limit is lifted
MEASURE = 1.0  # seconds: the rate reached is the requests of the last second, once that long unthrottled
LOG_EVERY = 1.0  # seconds: at most one limit line per table, so a throttle storm logs a few lines

Clock = Callable[[], float]
# A listener of Budget.watch: the target table, the rate writes to it may not
# exceed (units/s, math.inf when nothing limits it), the requests allowed in flight.
LimitListener = Callable[[str, float, int], None]


def units(request_item: Item | None) -> int:
    """Write capacity units of one write: 1 per started KB of the item; a delete is 1."""
    if request_item is None:
        return 1
    return max(1, math.ceil(item_size(request_item) / 1024))


class TokenBucket:
    """A rate in units/s that concurrent callers share: each takes what it sends,
    going into debt if need be, and waits until the debt is paid."""

    def __init__(self, rate: float, burst: float | None = None, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate * 0.1
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self, amount: float) -> float:
        """Take `amount`; the seconds to wait before using it."""
        with self._lock:
            self._refill()
            self._tokens -= amount
            return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def forgive(self) -> None:
        """Cancel the debt: callers waiting already keep their waits, the next ones start afresh."""
        with self._lock:
            self._refill()
            self._tokens = max(self._tokens, 0.0)

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on."""
        with self._lock:
            self._refill()
            self.rate, self.burst = rate, rate * 0.1

    def _refill(self) -> None:
        """What the time since the last look earned, up to the burst (the caller holds the lock)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


class AdaptiveLimit:
    """One target table's AIMD rate: unlimited until DynamoDB first throttles."""

    def __init__(
        self,
        target: str,
        concurrency: int,
        on_change: Callable[[AdaptiveLimit], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self.target = target
        self.window = concurrency  # requests allowed in flight
        self.max_window = concurrency
        self._bucket: TokenBucket | None = None
        self._ceiling: float | None = None  # the rate throttling last began at after a second unthrottled
        self._held: float | None = None  # when the limit got back to the ceiling; None until it did
        self._doublings = 0  # past any ceiling since the last cut, towards lifting the limit
        self._probe = 0.0  # seconds between requests while throttled; 0 when not throttled
        self._last_change = 0.0
        self._sent: collections.deque[float] = collections.deque()  # when the last second's requests went out
        self._unthrottled: float | None = clock()  # since when requests go through, without an idle second
        self._active = clock()  # when the last request was counted, or the limit was made (its first)
        self._last_cut = float("-inf")
        self._last_send = float("-inf")  # when the last request went out
        self._lock = threading.Lock()
        self._slots = threading.Condition()
        self._in_flight = 0
        self._on_change = on_change
        self._clock = clock
        self._log = _LimitLog(target)

    @property
    def rate(self) -> float | None:
        """The current limit in units/s, None while unlimited."""
        return self._bucket.rate if self._bucket is not None else None

    @property
    def state(self) -> str:
        """Where the limit stands: unlimited, throttled, recovering (doubling back to its ceiling,
        or towards being lifted when there is none) or recovered (back at its ceiling, or past it)."""
        if self._bucket is None:
            return "unlimited"
        if self._probe > 0.0:
            return "throttled"
        return "recovering" if self._held is None else "recovered"

    def delay(self, amount: float | None) -> float:
        """Seconds to wait before sending a request of `amount` units (None: not
        counted, while no limit is in force); the request counts as sent."""
        with self._lock:
            now = self._clock()
            sent = self._sent
            if self._unthrottled is not None and now - self._active >= MEASURE:
                self._unthrottled = now  # idle a second: what follows is a burst, not yet a rate
            self._active = now
            while sent and now - sent[0] >= MEASURE:
                sent.popleft()
            sent.append(now)
            bucket, throttled = self._bucket, self._probe > 0.0
        wait = bucket.reserve(amount or 1.0) if bucket is not None else 0.0
        # While throttled the probes pace requests; a wait booked at the cut rate behind
        # the other lanes' would outlast the throttling, and a caller does not ask again.
        return min(wait, PROBE_MAX) if throttled else wait

    def spacing(self) -> float:
        """Seconds to wait, holding a slot, before the request goes out; 0 books it as sent now.

        While throttled, sends are spaced `probe` apart, whichever lane makes
        them, so the retries of requests that were in flight queue up behind one
        another instead of going out together. It is asked again after the wait:
        an answer that came meanwhile may have spaced the probes further apart.
        """
        with self._lock:
            now = self._clock()
            due = self._last_send + self._probe if self._probe > 0.0 else now
            if due > now:
                return due - now
            self._last_send = now
            return 0.0

    def now(self) -> float:
        """The limit's clock: pass its reading when a request went out to throttled()."""
        return self._clock()

    def throttled(self, amount: float, sent_at: float | None = None) -> None:
        """DynamoDB throttled a request of `amount` units: halve the rate and the
        window, and space the next requests further apart. A request sent before
        the last cut was answered under the old rate: it cuts nothing again, or
        a burst of requests in flight would halve the rate once each."""
        with self._lock:
            now = self._clock()
            if sent_at is not None and sent_at < self._last_cut:
                self._probe = min(PROBE_MAX, max(PROBE_START, self._probe))
                return
            if self._bucket is not None:
                current = self._bucket.rate
            else:  # the rate reached so far, from the requests of the last second
                current = max(FLOOR * 2, amount * sum(1 for t in self._sent if now - t < MEASURE))
            # Throttling begins: where it began is a ceiling only if writes went through for a
            # second before (a first burst, or a limit cut from one, is not a rate the table took).
            if self._probe == 0.0 and self._unthrottled is not None and now - self._unthrottled >= MEASURE:
                self._ceiling = current
            self._unthrottled = self._held = None
            self._doublings = 0
            self._probe = min(PROBE_MAX, max(PROBE_START, self._probe * 2))
            self.window = max(1, self.window // 2)
            self._last_cut = now
            self._set(max(FLOOR, current / 2), now, cut=True)

    def succeeded(self) -> None:
        """A request went through: recover quickly to where throttling began, grow slowly
        there for HOLD seconds, then (or with no such rate) double until the limit is lifted."""
        with self._lock:
            now = self._clock()
            self._probe = 0.0
            if self._unthrottled is None:
                self._unthrottled = now
                if self._bucket is not None:  # throttling ended: throttled requests wrote nothing
                    self._bucket.forgive()
            if self._bucket is None or now - self._last_change < RECOVER_EVERY:
                return
            rate: float | None = self._bucket.rate
            recovered = False
            if self._held is None and self._ceiling is not None:
                rate = min(self._ceiling, self._bucket.rate * 2)
                recovered = rate >= self._ceiling
                self._held = now if recovered else None
            elif self._held is not None and now - self._held < HOLD:
                rate = self._bucket.rate * (1 + ADDITIVE * min(1.0, now - self._last_change))
            else:  # nothing known to stop at, or the capacity moved past it
                self._doublings += 1
                lifted = self._doublings > LIFT_AFTER
                recovered = lifted and self._held is None  # else its line went out at the ceiling
                rate = None if lifted else self._bucket.rate * 2
            self.window = self.max_window if rate is None else min(self.max_window, self.window * 2)
            self._set(rate, now, cut=recovered)

    @contextlib.contextmanager
    def slot(self, stop: threading.Event) -> Iterator[None]:
        """One of the `window` requests allowed in flight, waited for."""
        with self._slots:
            while self._in_flight >= self.window:
                if stop.is_set():
                    raise TargetUnavailableError(f"writing to {self.target!r}: stopped")
                self._slots.wait(0.1)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._slots:
                self._in_flight -= 1
                self._slots.notify()

    def _set(self, rate: float | None, now: float, cut: bool) -> None:
        """Apply a new rate (None: lift the limit); `cut` marks a change worth a log line
        (a cut, or the full recovery: back at the ceiling, or lifted when there was none)."""
        if rate is None:
            self._bucket = None
        elif self._bucket is None:
            self._bucket = TokenBucket(rate, clock=self._clock)
        else:
            self._bucket.set_rate(rate)
        self._last_change = now
        self._log.changed("recovered" if rate is None else self.state, rate, self.window, cut, now)
        self._on_change(self)


class _LimitLog:
    """When one table's limit is logged: on each cut and on the full recovery,
    at most once a LOG_EVERY. A line held back by that is written, with the
    limit as it is then, by the next change after LOG_EVERY has passed."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._last = -math.inf  # when the last line was written
        self._said: tuple[str, float | None] | None = None  # the state and rate it gave
        self._due = False

    def changed(self, state: str, rate: float | None, window: int, notable: bool, now: float) -> None:
        """One change of the limit, logged if it is due and the last line is old enough."""
        # At the floor a throttle storm repeats the same cut: only news is due.
        if notable and (state, rate) != self._said:
            self._due = True
        if not self._due or now - self._last < LOG_EVERY:
            return
        self._last, self._said, self._due = now, (state, rate), False
        log.info(
            "write rate limit",
            extra=fields(table=self.target, units_per_second=None if rate is None else round(rate, 1),
                         in_flight=window, state=state),
        )


class _Shared:
    """What a budget and those its sharing() made have in common: the adaptive limits and their watchers."""

    def __init__(self) -> None:
        self.limits: dict[str, AdaptiveLimit] = {}
        self.lock = threading.Lock()
        self.watchers: list[tuple[Budget, LimitListener]] = []


class Budget:
    """The process's write limits: the configured token bucket, and an adaptive limit per target."""

    def __init__(self, max_write_rate: float | None, concurrency: int, clock: Clock = time.monotonic) -> None:
        self.bucket = TokenBucket(max_write_rate, clock=clock) if max_write_rate else None
        self.concurrency = concurrency
        self._clock = clock
        self._shared = _Shared()

    def sharing(self, max_write_rate: float | None) -> Budget:
        """Another budget with its own token bucket, sharing these adaptive limits."""
        other = Budget(max_write_rate, self.concurrency, self._clock)
        other._shared = self._shared
        return other

    def set_max_rate(self, max_write_rate: float | None) -> None:
        """Change the configured rate (a reload); the adaptive limits carry on."""
        if max_write_rate is None:
            self.bucket = None
        elif self.bucket is None:
            self.bucket = TokenBucket(max_write_rate, clock=self._clock)
        else:
            self.bucket.set_rate(max_write_rate)

    def limit(self, target: str) -> AdaptiveLimit:
        """The adaptive limit of one target table."""
        shared = self._shared
        with shared.lock:
            found = shared.limits.get(target)
            if found is not None:
                return found
            found = AdaptiveLimit(target, self.concurrency, self._changed, self._clock)
            shared.limits[target] = found
        self._changed(found)  # a table's gauge exists from its first write on
        return found

    def counts(self, target: str) -> bool:
        """Whether requests to `target` must be counted in units: a limit is in force."""
        return self.bucket is not None or self.limit(target).rate is not None

    def delay(self, target: str, amount: float | None) -> float:
        """Seconds to wait before sending `amount` units to `target`."""
        wait = self.bucket.reserve(amount) if self.bucket is not None and amount is not None else 0.0
        return max(wait, self.limit(target).delay(amount))

    def rate_limit(self, target: str) -> float:
        """The rate writes to `target` may not exceed, in units/s: the lower of its
        adaptive limit and this budget's (which all tables share); inf when neither."""
        return self._effective(self.limit(target))

    def watch(self, listener: LimitListener) -> None:
        """Call `listener` with each target's rate limit (as rate_limit gives it) and
        window whenever they change, and now for the targets written so far."""
        shared = self._shared
        with shared.lock:
            shared.watchers.append((self, listener))
            known = list(shared.limits.values())
        for found in known:
            listener(found.target, self._effective(found), found.window)

    def _effective(self, found: AdaptiveLimit) -> float:
        rates = [r for r in (found.rate, self.bucket.rate if self.bucket else None) if r is not None]
        return min(rates, default=math.inf)

    def _changed(self, found: AdaptiveLimit) -> None:
        for budget, listener in list(self._shared.watchers):
            listener(found.target, budget._effective(found), found.window)
