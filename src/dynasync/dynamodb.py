"""The boto3 implementation of the Target interface: the only module that
imports boto3. Retries are dynasync's own (dynasync.retry), so botocore's are
turned off and every failure is classified here: retryable (and whether it was
throttling), invalid, or fatal.

BatchWriteItem goes over the lean path (dynasync.wire) unless botocore would
send it through a proxy; everything else goes over botocore's own transport.
Both keep the same promises: every request has an overall deadline,
connect_timeout + read_timeout from its start (each receive of its reply gets
only what is left of it: a reply trickled a byte at a time cannot hold a
request for ever), after which it is a RetryableError and its connection is
reset; and every reply that is not what the protocol says (a CRC32 mismatch, a
body that is not a JSON object, UnprocessedItems off the attribute-value
grammar, anything botocore's parser cannot read) is a RetryableError.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.awsrequest
import botocore.config
import botocore.exceptions
import botocore.handlers

from dynasync import __version__, http1, wire, workers
from dynasync.config import DynamoConfig
from dynasync.exceptions import (
    NoRegionError,
    RetryableError,
    TableExistsError,
    TableMissingError,
    TargetError,
    ValidationError,
)
from dynasync.http1 import Deadline
from dynasync.target import KeySchema, TableInfo, WriteRequest
from dynasync.values import Item
from dynasync.wire import WireClient

USER_AGENT_EXTRA = f"dynasync/{__version__}"  # in botocore's User-Agent, on both paths

# Errors one item of a request can cause, which retrying it unchanged cannot
# fix: the writer narrows the request down to that item, a dead letter.
ITEM_CODES = frozenset({"ValidationException", "ItemCollectionSizeLimitExceededException"})
# DynamoDB's answers to a caller that goes faster than the table allows.
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
RETRYABLE_CODES = THROTTLE_CODES | frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "LimitExceededException",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def _send_is_stubbed() -> bool:
    """Whether a handler answers botocore's requests in process (moto's stubber when enabled)."""
    return any(
        entry[0].startswith("before-send") and getattr(entry[1], "enabled", False)
        for entry in botocore.handlers.BUILTIN_HANDLERS
    )


def _check_reply(response_dict: dict[str, Any], operation_model: Any, **_: Any) -> None:
    """botocore's `before-parse` hook: its replies checked as the lean path's are
    (dynasync.wire). botocore's own CRC32 check only asks for a retry, and
    dynasync's retries are its own; and botocore takes a body that is not JSON
    for a reply with no fields: a 200 with garbage would pass for a batch applied whole."""
    body = response_dict.get("body", b"")
    if not isinstance(body, bytes):  # a streamed body: no DynamoDB operation has one
        return
    headers = response_dict.get("headers", {})
    reply = wire.parse_reply(int(response_dict.get("status_code") or 0), headers.get("x-amz-crc32"), body)
    if operation_model.name == "BatchWriteItem" and reply.status == 200:
        wire.unprocessed_items(reply.doc)


class _Parser:
    """One of botocore's response parsers; a reply it cannot read is a RetryableError."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser

    def parse(self, response: dict[str, Any], shape: Any) -> Any:
        """botocore's parse, its failures on a malformed reply made retryable."""
        try:
            return self._parser.parse(response, shape)
        except Exception as e:  # whatever a reply that is not what the model says makes botocore raise
            message = f"a reply botocore cannot read ({type(e).__name__}: {e})"
            raise RetryableError("BadResponse", message) from e


class _Parsers:
    """botocore's response parser factory, its parsers wrapped in _Parser."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def create_parser(self, protocol_name: str) -> _Parser:
        """botocore's parser for the protocol."""
        return _Parser(self._factory.create_parser(protocol_name))


_CALL = threading.local()  # .deadline: the Deadline of the botocore call this thread is making


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response botocore's transport reads by the deadline of the call it belongs to."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        deadline = getattr(_CALL, "deadline", None)
        if deadline is not None:
            self.fp = http1.deadline_reader(self.fp, sock, deadline)


class _HTTPConnection(botocore.awsrequest.AWSHTTPConnection):
    response_class = _DeadlineResponse  # type: ignore[assignment]


class _HTTPSConnection(botocore.awsrequest.AWSHTTPSConnection):
    response_class = _DeadlineResponse  # type: ignore[assignment]


class _HTTPPool(botocore.awsrequest.AWSHTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(botocore.awsrequest.AWSHTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _harden(client: Any) -> None:
    """botocore's transport for this client, made to keep the lean path's promises:
    replies checked, a reply botocore cannot read retryable, every response read by its deadline."""
    client.meta.events.register("before-parse.dynamodb.*", _check_reply)
    endpoint = client._endpoint
    endpoint._response_parser_factory = _Parsers(endpoint._response_parser_factory)
    pools = {"http": _HTTPPool, "https": _HTTPSPool}
    endpoint.http_session._pool_classes_by_scheme = pools  # proxy pools are made from these too
    endpoint.http_session._manager.pool_classes_by_scheme = pools


def _region(cfg: DynamoConfig, session: boto3.session.Session) -> str:
    """[dynamodb] region, AWS_REGION, then botocore's own (AWS_DEFAULT_REGION, then
    the profile's); NoRegionError if none is set: dynasync never guesses one."""
    region = cfg.region or os.environ.get("AWS_REGION") or session.region_name
    if not region:
        raise NoRegionError(
            "no AWS region is set: set [dynamodb] region in the config, AWS_REGION or AWS_DEFAULT_REGION "
            "in the environment, or region in the AWS profile"
        )
    return region


def _request_url(client: Any) -> str:
    """The URL botocore builds for a BatchWriteItem request of this client."""
    operation = client.meta.service_model.operation_model("BatchWriteItem")
    request = {"url_path": operation.http["requestUri"], "query_string": "", "headers": {}}
    botocore.awsrequest.prepare_request_dict(request, endpoint_url=client.meta.endpoint_url)
    return str(request["url"])


def classify(code: str, message: str, status: int, operation: str, table: str) -> TargetError:
    """The error for a DynamoDB failure: a missing table, one item's fault
    (narrowed to a dead letter), retryable (and whether it was throttling), or fatal."""
    if code == "ResourceNotFoundException":
        return TableMissingError(f"DynamoDB table {table!r} does not exist", table)
    if code == "ResourceInUseException" and operation == "create_table":
        return TableExistsError(message)
    if code in ITEM_CODES:
        return ValidationError(message if code == "ValidationException" else f"{code}: {message}")
    if code in RETRYABLE_CODES or status >= 500:
        return RetryableError(code, message, throttle=code in THROTTLE_CODES)
    return TargetError(f"DynamoDB {operation} on {table!r} failed: {code}: {message}")


class DynamoTarget:
    """Target over a boto3 DynamoDB client, with botocore's own retries off;
    `lean=False` sends BatchWriteItem over botocore's transport too."""

    def __init__(self, cfg: DynamoConfig, lean: bool = True) -> None:
        session = boto3.session.Session()
        self._session = session
        self._client: Any = session.client(
            "dynamodb",
            region_name=_region(cfg, session),
            endpoint_url=cfg.endpoint_url,
            config=botocore.config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                max_pool_connections=max(10, cfg.max_concurrency * 2),
                # DynamoDB validates every request itself; botocore's client-side
                # pass costs more CPU per item than the rest of a pass combined.
                parameter_validation=False,
                user_agent_extra=USER_AGENT_EXTRA,
            ),
        )
        _harden(self._client)
        # Each request's overall deadline, from its start: connecting, then its reply.
        self.request_time = cfg.connect_timeout + cfg.read_timeout
        self._wire = self._wire_client(cfg) if lean else None

    def _wire_client(self, cfg: DynamoConfig) -> WireClient | None:
        """BatchWriteItem's lean path (dynasync.wire), from what botocore resolved for
        the client; None where botocore's own transport must carry it: where botocore
        would use a proxy for the endpoint (its resolved proxy config: HTTP(S)_PROXY,
        NO_PROXY, Config(proxies=)), where its TLS settings cannot be loaded (its
        transport then reports why, request by request), and where something in
        this process answers botocore's requests itself (moto, a test stubber)."""
        if _send_is_stubbed():
            return None
        client = self._client
        http = client._endpoint.http_session
        url = _request_url(client)
        if http._proxy_config.proxy_url_for(url):
            return None
        tls = None
        if urlsplit(url).scheme == "https":
            try:
                tls = wire.tls_context(http._get_ssl_context(), http._verify, http._cert_file, http._key_file)
            except (OSError, ValueError):
                return None
        creds = self._session.get_credentials

        def frozen() -> Any:
            found = creds()
            return found.get_frozen_credentials() if found is not None else None

        endpoint = wire.Endpoint(url, client._user_agent_creator.to_string(), tls)
        region = str(client.meta.region_name)
        return WireClient(endpoint, region, frozen, cfg.connect_timeout, cfg.read_timeout)

    def _call(self, operation: str, table: str, deadline: Deadline | None = None, **kwargs: Any) -> Any:
        """One botocore call, ended by `deadline` (by default request_time from now)."""
        deadline = deadline or Deadline.after(self.request_time)
        _CALL.deadline = deadline
        try:
            return getattr(self._client, operation)(**kwargs)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            message = str(err.get("Message", e))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            raise classify(code, message, status, operation, table) from e
        except botocore.exceptions.NoCredentialsError as e:
            raise TargetError("no AWS credentials found (set AWS_ACCESS_KEY_ID or a profile)") from e
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as e:
            if deadline.expired:
                raise RetryableError("DeadlineExceeded", f"{operation} on {table!r}: no reply within "
                                     f"{self.request_time:g}s (connect_timeout + read_timeout)") from e
            raise RetryableError(type(e).__name__, str(e)) from e
        finally:
            _CALL.deadline = None

    def _table(self, table: str) -> dict[str, Any]:
        """DescribeTable's Table."""
        desc = self._call("describe_table", table, TableName=table).get("Table")
        if not isinstance(desc, dict):
            raise RetryableError("BadResponse", f"DescribeTable on {table!r}: a reply without its Table")
        return desc

    def describe(self, table: str) -> TableInfo | None:
        """DescribeTable: the key schema, partition key first, and the table's identity."""
        try:
            desc = self._table(table)
        except TableMissingError:
            return None
        try:
            types = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
            ordered = sorted(desc["KeySchema"], key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
            key = tuple((k["AttributeName"], types[k["AttributeName"]]) for k in ordered)
        except (KeyError, TypeError) as e:
            message = f"DescribeTable on {table!r}: a key schema without {e}"
            raise RetryableError("BadResponse", message) from e
        # DynamoDB Local has no TableId; its creation time tells a new table apart just as well.
        identity = desc.get("TableId") or str(desc.get("CreationDateTime", ""))
        return TableInfo(key, identity)

    def create_table(self, table: str, key: KeySchema) -> None:
        """CreateTable (on demand), then wait until the table is ACTIVE."""
        roles = ("HASH", "RANGE")
        deadline = Deadline.after(self.request_time)
        # An earlier attempt may have got through before its connection dropped.
        with contextlib.suppress(TableExistsError), workers.writing(deadline.at):
            self._call(
                "create_table",
                table,
                deadline,
                TableName=table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in key],
                KeySchema=[{"AttributeName": n, "KeyType": roles[i]} for i, (n, _) in enumerate(key)],
            )
        ends = time.monotonic() + 300
        while time.monotonic() < ends:
            if self._table(table).get("TableStatus") == "ACTIVE":
                return
            time.sleep(1)
        raise TargetError(f"DynamoDB table {table!r} did not become ACTIVE within 5 minutes")

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> list[WriteRequest]:
        """BatchWriteItem; the unprocessed requests. A stop waits for it (dynasync.workers)."""
        deadline = Deadline.after(self.request_time)
        with workers.writing(deadline.at):
            if self._wire is None:
                items = {table: list(requests)}
                response = self._call("batch_write_item", table, deadline, RequestItems=items)
                return list(response.get("UnprocessedItems", {}).get(table, []))
            sent = self._wire.batch_write(table, requests, deadline)
        if sent.status == 200:
            return wire.unprocessed_items(sent.doc).get(table, [])
        code = sent.code or f"HTTP{sent.status}"
        raise classify(code, sent.message, sent.status, "batch_write_item", table)

    def batch_get(self, table: str, keys: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        """Consistent BatchGetItem; (items found, unprocessed keys)."""
        response = self._call(
            "batch_get_item", table, RequestItems={table: {"Keys": list(keys), "ConsistentRead": True}}
        )
        items = list(response.get("Responses", {}).get(table, []))
        unprocessed = list(response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", []))
        return items, unprocessed

    def scan(self, table: str, start: Item | None) -> tuple[list[Item], Item | None]:
        """One consistent Scan page and the key it stopped at."""
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        page = self._call("scan", table, **kwargs)
        return list(page.get("Items", [])), page.get("LastEvaluatedKey")
