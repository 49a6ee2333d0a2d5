"""The boto3 implementation of the ObjectStore interface (dynasync.target), for
the attributes of oversized items: with dynasync.dynamodb, the only modules
that import boto3.

It is a standard boto3 S3 client, so the AWS environment applies as the SDK
applies it (credentials, AWS_ENDPOINT_URL_S3, AWS_CA_BUNDLE, proxies). As with
DynamoDB, retries are dynasync's own (dynasync.retry): botocore's are off, and
every failure is classified here as retryable (and whether it was throttling)
or fatal, naming the operation and the object.
"""

from __future__ import annotations

import base64
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from dynasync import __version__
from dynasync.config import Config
from dynasync.exceptions import NoRegionError, RetryableError, TargetError
from dynasync.target import ObjectInfo

THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"})
RETRYABLE_CODES = THROTTLE_CODES | frozenset(
    {"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "OperationAborted"}
)
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def client(cfg: Config) -> Any:
    """A boto3 S3 client for [s3] (endpoint, region), with [dynamodb]'s timeouts
    and botocore's retries off."""
    session = boto3.session.Session()
    region = cfg.s3.region or cfg.dynamodb.region or os.environ.get("AWS_REGION") or session.region_name
    if not region:
        raise NoRegionError("no AWS region is set for S3: set [s3] region (or [dynamodb] region) in the "
                            "config, or AWS_REGION in the environment")
    return session.client(
        "s3",
        region_name=region,
        endpoint_url=cfg.s3.endpoint_url,
        config=botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=cfg.dynamodb.connect_timeout,
            read_timeout=cfg.dynamodb.read_timeout,
            max_pool_connections=max(10, cfg.s3.max_concurrency * 2),
            user_agent_extra=f"dynasync/{__version__}",
        ),
    )


class S3Store:
    """ObjectStore over a boto3 S3 client, at most [s3] max_concurrency requests at once."""

    def __init__(self, cfg: Config) -> None:
        self._client = client(cfg)
        self._slots = threading.BoundedSemaphore(cfg.s3.max_concurrency)

    def _call(self, operation: str, what: str, **kwargs: Any) -> Any:
        with self._slots:
            try:
                return getattr(self._client, operation)(**kwargs)
            except botocore.exceptions.ClientError as e:
                err = e.response.get("Error", {})
                code = str(err.get("Code", "Unknown"))
                status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
                message = f"S3 {operation} on {what}: {code}: {err.get('Message', e)}"
                if code == "NoSuchBucket":  # a 404 too, but the config is wrong: no object is "missing"
                    raise TargetError(message) from e
                if code in MISSING_CODES or status == 404:
                    raise _Missing from e
                if code in RETRYABLE_CODES or status >= 500:
                    raise RetryableError(f"S3.{code}", message, throttle=code in THROTTLE_CODES) from e
                raise TargetError(message) from e
            except botocore.exceptions.NoCredentialsError as e:
                message = "no AWS credentials found for S3 (set AWS_ACCESS_KEY_ID or a profile)"
                raise TargetError(message) from e
            except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as e:
                raise RetryableError(f"S3.{type(e).__name__}", f"S3 {operation} on {what}: {e}") from e

    def put(self, bucket: str, key: str, body: bytes, sha256: str) -> None:
        """PutObject, which S3 checks against the SHA-256 and keeps it."""
        self._put(bucket, key, body, sha256, "application/json")

    def put_file(self, bucket: str, key: str, path: Path, sha256: str, content_type: str) -> None:
        """PutObject with the file as its streamed body, checked against the SHA-256."""
        with path.open("rb") as body:
            self._put(bucket, key, body, sha256, content_type)

    def _put(self, bucket: str, key: str, body: Any, sha256: str, content_type: str) -> None:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        try:
            self._call("put_object", f"s3://{bucket}/{key}", Bucket=bucket, Key=key, Body=body,
                       ChecksumSHA256=checksum, ContentType=content_type)
        except _Missing as e:  # a 404 to a write: the bucket is not there
            message = f"S3 put_object on s3://{bucket}/{key}: NoSuchBucket: the bucket does not exist"
            raise TargetError(message) from e

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """HeadObject, with the SHA-256 S3 kept for it when it has one."""
        try:
            got = self._call("head_object", f"s3://{bucket}/{key}", Bucket=bucket, Key=key,
                             ChecksumMode="ENABLED")
        except _Missing:
            return None
        checksum = got.get("ChecksumSHA256")
        sha = base64.b64decode(checksum).hex() if isinstance(checksum, str) and "-" not in checksum else None
        return ObjectInfo(key, int(got.get("ContentLength", 0)), sha, got["LastModified"].timestamp())

    def get(self, bucket: str, key: str) -> bytes | None:
        """GetObject's body."""
        try:
            got = self._call("get_object", f"s3://{bucket}/{key}", Bucket=bucket, Key=key)
        except _Missing:
            return None
        try:
            body: bytes = got["Body"].read()
        except (botocore.exceptions.BotoCoreError, OSError) as e:  # the reply broke off mid-body
            message = f"S3 get_object on s3://{bucket}/{key}: {e}"
            raise RetryableError(f"S3.{type(e).__name__}", message) from e
        return body

    def delete(self, bucket: str, keys: Sequence[str]) -> None:
        """DeleteObjects; an object S3 could not delete fails the call, naming it."""
        if not keys:
            return
        got = self._call("delete_objects", f"s3://{bucket}", Bucket=bucket,
                         Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = [e for e in got.get("Errors", []) if e.get("Code") not in MISSING_CODES]
        if errors:
            first = errors[0]
            code = str(first.get("Code"))
            message = f"S3 DeleteObjects on s3://{bucket}/{first.get('Key')}: {code}: {first.get('Message')}"
            if code in RETRYABLE_CODES:
                raise RetryableError(f"S3.{code}", message, throttle=code in THROTTLE_CODES)
            raise TargetError(message)

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """ListObjectsV2, page after page."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", f"s3://{bucket}/{prefix}", **kwargs)
            for o in page.get("Contents", []):
                yield ObjectInfo(o["Key"], int(o["Size"]), None, o["LastModified"].timestamp())
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return


class _Missing(Exception):
    """No such object (or bucket key): an answer, not a failure."""


@functools.cache
def _default_client() -> Any:
    return boto3.client("s3")


def fetch(bucket: str, key: str) -> bytes:
    """An object's body through boto3's default S3 client (the standard AWS
    environment: credentials, region, AWS_ENDPOINT_URL_S3), for decode_item()."""
    body: bytes = _default_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body
