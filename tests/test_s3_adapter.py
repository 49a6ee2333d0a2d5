"""The boto3 S3 adapter classifies what S3 answers as dynasync's errors:
throttling and 5xx retryable (codes prefixed `S3.`, so the retry metrics tell
them from DynamoDB's), a missing object an answer, a missing bucket a fatal
error naming it."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from dynasync import config
from dynasync.exceptions import RetryableError, TargetError
from dynasync.s3 import S3Store


def _store() -> tuple[S3Store, Stubber]:
    cfg = config.parse({"source": {"database": "x.db"}, "dynamodb": {"region": "us-east-1"},
                        "s3": {"bucket": "the-bucket"}, "tables": [{"source": "t", "target": "tgt"}]})
    store = S3Store(cfg)
    stub = Stubber(store._client)
    stub.activate()
    return store, stub


def test_s3_throttling_is_retryable_and_says_it_came_from_s3() -> None:
    store, stub = _store()
    stub.add_client_error("put_object", service_error_code="SlowDown", http_status_code=503)
    with pytest.raises(RetryableError) as e:
        store.put("the-bucket", "k", b"{}", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
    assert e.value.code == "S3.SlowDown" and e.value.throttle


def test_a_server_error_is_retryable_and_not_throttling() -> None:
    store, stub = _store()
    stub.add_client_error("delete_objects", service_error_code="InternalError", http_status_code=500)
    with pytest.raises(RetryableError) as e:
        store.delete("the-bucket", ["k"])
    assert e.value.code == "S3.InternalError" and not e.value.throttle


def test_a_missing_object_is_an_answer_and_a_missing_bucket_an_error_naming_it() -> None:
    store, stub = _store()
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    assert store.head("the-bucket", "gone") is None
    stub.add_client_error("list_objects_v2", service_error_code="NoSuchBucket", http_status_code=404)
    with pytest.raises(TargetError, match="NoSuchBucket") as e:
        list(store.list("the-bucket", "p/"))
    assert not isinstance(e.value, RetryableError)


def test_access_denied_fails_the_call_naming_the_object() -> None:
    store, stub = _store()
    stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(TargetError, match=r"s3://the-bucket/k: AccessDenied") as e:
        store.get("the-bucket", "k")
    assert not isinstance(e.value, RetryableError)
