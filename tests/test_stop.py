"""A stop never abandons a write DynamoDB could still apply after the lock is
let go: a write in flight is waited for until DynamoDB answers or its deadline
(connect_timeout + read_timeout) passes, when its connection is reset; once a
stop is asked for no new write is sent; anything else is still given up on
after workers.ABANDON_AFTER. Against a stand-in, on the lean path and botocore's."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from replystub import Raw, Reply, ReplyStub, http_reply

from dynasync import config, workers
from dynasync.dynamodb import DynamoTarget
from dynasync.exceptions import TargetUnavailableError
from dynasync.retry import Retrier
from dynasync.writer import Writer
from dynasync.writes import RowRef, Write

TABLE = "ttt"
OK = b'{"UnprocessedItems": {}}'


@pytest.fixture(autouse=True)
def _short_abandon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "ABANDON_AFTER", 0.3)


@contextlib.contextmanager
def serving(answer: Callable[[str, dict[str, Any]], Reply | Raw]) -> Iterator[ReplyStub]:
    stub = ReplyStub(answer)
    try:
        yield stub
    finally:
        stub.close()


def writes(n: int) -> list[Write]:
    return [Write.put(RowRef("t", i), {"id": {"N": str(i)}}, ("id",)) for i in range(n)]


def writer(endpoint: str, lean: bool, stop: workers.Stop, connect: float = 1.0, read: float = 3.0) -> Writer:
    data = {"source": {"database": "x.db"}, "tables": [{"source": "t", "target": TABLE}],
            "dynamodb": {"region": "us-east-1", "endpoint_url": endpoint, "connect_timeout": connect,
                         "read_timeout": read}}
    target = DynamoTarget(config.parse(data).dynamodb)
    if not lean:
        target._wire = None
    return Writer(target, Retrier(60.0, stop), 1)


def stop_once_received(stub: ReplyStub, stop: workers.Stop, requests: int = 1) -> None:
    """Ask for a stop once the stand-in has `requests` requests."""
    deadline = time.monotonic() + 5
    while len(stub.bodies) < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(stub.bodies) == requests
    stop.set()


@pytest.mark.parametrize("lean", [True, False])
def test_a_write_answered_after_the_abandon_window_is_waited_for(lean: bool) -> None:
    with serving(lambda op, body: Raw([b"", http_reply(200, OK)], pause=1.2)) as stub:
        stop = workers.Stop()
        started = time.monotonic()
        delivery = writer(stub.endpoint, lean, stop).start({TABLE: writes(3)})
        stop_once_received(stub, stop)
        result = delivery.wait()  # not abandoned after 0.3 s: DynamoDB answered within the deadline
        assert result.rejected == [] and result.stats.requests == 1
        assert 0.9 < time.monotonic() - started < 4.5  # the reply's 1.2 s, not ABANDON_AFTER's 5 s
        assert stub.cut == []


@pytest.mark.parametrize("lean", [True, False])
def test_once_a_stop_is_asked_for_no_new_write_is_sent(lean: bool) -> None:
    with serving(lambda op, body: Raw([b"", http_reply(200, OK)], pause=0.5)) as stub:
        stop = workers.Stop()
        delivery = writer(stub.endpoint, lean, stop).start({TABLE: writes(75)})  # three requests, one lane
        stop_once_received(stub, stop)
        with pytest.raises(TargetUnavailableError, match="stop"):
            delivery.wait()
        time.sleep(0.6)
        assert len(stub.bodies) == 1


@pytest.mark.parametrize("lean", [True, False])
def test_a_write_unanswered_at_its_deadline_ends_then_with_its_connection_closed(lean: bool) -> None:
    """connect_timeout 0.5 + read_timeout 1.0: the stop waits 1.5 s from the
    request's start, not ABANDON_AFTER, and not a read timeout per byte."""
    drip = Raw([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", *[b" "] * 100], pause=0.2)
    with serving(lambda op, body: drip) as stub:
        stop = workers.Stop()
        started = time.monotonic()
        delivery = writer(stub.endpoint, lean, stop, connect=0.5, read=1.0).start({TABLE: writes(1)})
        stop_once_received(stub, stop)
        with pytest.raises(TargetUnavailableError):
            delivery.wait()
        took = time.monotonic() - started
        assert 1.3 < took < 4.5, took  # the 1.5 s deadline: not ABANDON_AFTER's 5 s, nor 20 s of drip
        time.sleep(0.5)
        assert len(stub.cut) == 1  # the stand-in found the connection closed under its reply


def test_a_call_that_is_not_a_write_is_still_abandoned_after_abandon_after() -> None:
    stop = workers.Stop()
    stop.set()
    started = time.monotonic()
    with pytest.raises(workers.Abandoned):
        workers.call(lambda: time.sleep(3), stop)
    assert time.monotonic() - started < 1.5
