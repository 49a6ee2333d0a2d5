"""Batching, retries and narrowing, against the fake target."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fakes import FakeTarget, throttle_then_succeed

from dynasync.exceptions import RetryableError, TableMissingError, TargetUnavailableError, ValidationError
from dynasync.retry import Retrier, backoff
from dynasync.target import WriteRequest
from dynasync.writer import Writer
from dynasync.writes import RowRef, Write


def writes(n: int, bad: set[int] = frozenset()) -> list[Write]:  # type: ignore[assignment]
    out = []
    for i in range(n):
        item = {"id": {"N": str(i)}}
        if i in bad:
            item["blob"] = {"B": b"x" * (401 * 1024)}
        out.append(Write.put(RowRef("t", i), item, ("id",)))
    return out


def fake() -> FakeTarget:
    f = FakeTarget()
    f.create_table("t", (("id", "N"),))
    return f


def writer(f: FakeTarget, concurrency: int = 1, max_retry_time: float = 5.0) -> Writer:
    return Writer(f, Retrier(max_retry_time, sleep=lambda s: None), concurrency)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_chunks_of_25(concurrency: int) -> None:
    f = fake()
    r = writer(f, concurrency).write("t", writes(60))
    assert f.requests == 3 and len(f.items("t")) == 60 and not r.rejected


def test_unprocessed_items_are_retried_until_done() -> None:
    f = fake()
    calls = {"n": 0}

    def partial(requests: Sequence[WriteRequest]) -> int:
        calls["n"] += 1
        return len(requests) // 2 if calls["n"] < 4 else 0

    f.fault = partial
    r = writer(f).write("t", writes(25))
    assert len(f.items("t")) == 25 and r.stats.errors["UnprocessedItems"] == 3


def test_throttling_is_retried() -> None:
    f = fake()
    f.fault = throttle_then_succeed(3)
    r = writer(f).write("t", writes(5))
    assert len(f.items("t")) == 5 and r.stats.errors["ThrottlingException"] == 3 and r.stats.retries == 3


def test_retry_budget_is_bounded() -> None:
    f = fake()

    def always(requests: Sequence[WriteRequest]) -> int:
        raise RetryableError("InternalServerError", "boom")

    f.fault = always
    with pytest.raises(TargetUnavailableError, match="still failing"):
        Writer(f, Retrier(0.2), 1).write("t", writes(3))


def test_validation_error_is_narrowed_to_the_bad_items() -> None:
    f = fake()
    r = writer(f).write("t", writes(25, bad={3, 17}))
    assert sorted(x.ref.k1 for x in r.rejected) == [3, 17]
    assert len(f.items("t")) == 23
    assert all("rejected" in x.reason for x in r.rejected)


def test_missing_table_is_not_retried() -> None:
    with pytest.raises(TableMissingError):
        writer(FakeTarget()).write("nope", writes(1))


def test_backoff_is_capped_and_jittered() -> None:
    samples = [backoff(30) for _ in range(200)]
    assert max(samples) <= 5.0 and len(set(samples)) > 100
    assert all(0 <= backoff(0) <= 0.05 for _ in range(50))


def test_retry_counts_throttles_apart_from_other_retries() -> None:
    f = fake()
    calls = {"n": 0}

    def mixed(requests: Sequence[WriteRequest]) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RetryableError("ThrottlingException", "slow down", throttle=True)
        if calls["n"] == 2:
            raise RetryableError("InternalServerError", "boom")
        return len(requests) - 1 if calls["n"] == 3 else 0

    f.fault = mixed
    r = writer(f).write("t", writes(3))
    assert len(f.items("t")) == 3 and r.stats.retries == 3 and r.stats.requests == 4
    assert r.stats.errors == {"ThrottlingException": 1, "InternalServerError": 1, "UnprocessedItems": 1}
    assert r.stats.throttles == {"ThrottlingException": 1, "UnprocessedItems": 1}


def test_retries_stop_when_asked() -> None:
    import threading

    f = fake()
    f.fault = throttle_then_succeed(10**6)
    stop = threading.Event()
    stop.set()
    with pytest.raises(TargetUnavailableError, match="stopped while retrying"):
        Writer(f, Retrier(60.0, stop), 1).write("t", writes(1))


def test_narrowing_after_a_partial_batch_resends_only_what_was_left() -> None:
    f = fake()
    sent: list[list[int]] = []
    calls = {"n": 0}

    def first_partial(requests: Sequence[WriteRequest]) -> int:
        calls["n"] += 1
        ids = [int(r["PutRequest"]["Item"]["id"]["N"]) for r in requests]
        sent.append(ids)
        if calls["n"] == 1:
            return 5  # DynamoDB takes 20 and hands 5 back
        if 22 in ids:  # then item 22's collection is full: refused, per item
            raise ValidationError("ItemCollectionSizeLimitExceededException: full")
        return 0

    f.fault = first_partial
    r = writer(f).write("t", writes(25))
    assert [x.ref.k1 for x in r.rejected] == [22]
    assert sent[0] == list(range(25))
    assert all(i >= 20 for batch in sent[1:] for i in batch), sent  # the 20 taken are never resent
    assert len(f.items("t")) == 24
