"""BatchWriteItem without botocore's per-item work.

dynasync's items are already in DynamoDB's wire format, so the request body
is one json.dumps (binary values become base64, as botocore sends them).
botocore still provides what it does well: the credential chain and its
refresh, the region and endpoint, and SigV4 signing. Each thread keeps its
own keep-alive connection. The response is checked as strictly as botocore
does: its CRC32 header must match the body, and errors are classified by
dynasync.dynamodb's rules.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from dynasync import http1
from dynasync.exceptions import Closed, RetryableError, TargetError
from dynasync.target import WriteRequest

TARGET = "DynamoDB_20120810.BatchWriteItem"
CONTENT_TYPE = "application/x-amz-json-1.0"


def _b64(value: object) -> str:
    """json.dumps's hook: bytes (a B attribute value) as base64, as the wire format wants."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not a DynamoDB attribute value")


def body(table: str, requests: Sequence[WriteRequest]) -> bytes:
    """The BatchWriteItem request body for these requests."""
    return json.dumps({"RequestItems": {table: list(requests)}}, default=_b64, ensure_ascii=False).encode()


def _decode_binary(av: Any) -> Any:
    """An attribute value from a response, with base64 B values as bytes again."""
    if isinstance(av, dict):
        return {k: base64.b64decode(v) if k == "B" else _decode_binary(v) for k, v in av.items()}
    if isinstance(av, list):
        return [_decode_binary(v) for v in av]
    return av


class Response:
    """An HTTP response: status, the error code DynamoDB named, and the JSON body."""

    def __init__(self, status: int, doc: dict[str, Any]) -> None:
        self.status = status
        self.doc = doc
        self.code = str(doc.get("__type", "")).rsplit("#", 1)[-1] if status != 200 else ""
        self.message = str(doc.get("message") or doc.get("Message") or "")


class WireClient:
    """Signed BatchWriteItem requests over per-thread keep-alive connections."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: Callable[[], Any],
        connect_timeout: float,
        read_timeout: float,
        ca_bundle: str | None = None,
    ) -> None:
        url = urlsplit(endpoint_url)
        self.url = endpoint_url.rstrip("/") + "/"
        self.host = url.hostname or ""
        self.port = url.port
        self.https = url.scheme == "https"
        self.host_header = url.netloc
        self.region = region
        self._credentials = credentials
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._ssl = ssl.create_default_context(cafile=ca_bundle) if self.https else None
        self._local = threading.local()

    def batch_write(self, table: str, requests: Sequence[WriteRequest]) -> Response:
        """Send one BatchWriteItem; the response (any status). RetryableError when
        the connection fails or the body is damaged on the way."""
        payload = body(table, requests)
        request = http1.request_bytes("POST", "/", self._sign(payload), payload)
        try:
            conn = self._connection()
            try:
                reply = conn.exchange(request)
            except Closed:
                if not conn.exchanges:
                    raise
                # A kept-alive connection the server closed while it sat idle:
                # sent again at once on a new one (writes are idempotent), not
                # counted as a failed request and retried after a backoff.
                self._drop()
                reply = self._connection().exchange(request)
        except OSError as e:
            self._drop()
            raise RetryableError(type(e).__name__, str(e) or "connection failed") from e
        if not reply.keep_alive:
            self._drop()
        crc = reply.headers.get("x-amz-crc32")
        if crc is not None and (not (crc.isascii() and crc.isdigit()) or int(crc) != zlib.crc32(reply.body)):
            self._drop()
            raise RetryableError("CRC32Mismatch", "the response body does not match its CRC32")
        try:
            doc = json.loads(reply.body) if reply.body else {}
        except ValueError:
            raise RetryableError("BadResponse", f"HTTP {reply.status} with a body that is not JSON") from None
        return Response(reply.status, doc)

    def unprocessed(self, response: Response, table: str) -> list[WriteRequest]:
        """The requests DynamoDB handed back, binary values decoded."""
        items = response.doc.get("UnprocessedItems", {}).get(table, [])
        return [_decode_binary(r) for r in items]

    def _sign(self, payload: bytes) -> dict[str, str]:
        creds = self._credentials()
        if creds is None:
            raise TargetError("no AWS credentials found (set AWS_ACCESS_KEY_ID or a profile)")
        request = AWSRequest(method="POST", url=self.url, data=payload,
                             headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET})
        SigV4Auth(creds, "dynamodb", self.region).add_auth(request)
        headers = dict(request.headers.items())
        headers["Host"] = self.host_header
        headers["Content-Length"] = str(len(payload))
        return headers

    def _connection(self) -> http1.Connection:
        conn: http1.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            port = self.port or (443 if self.https else 80)
            conn = http1.Connection(self.host, port, self.connect_timeout, self.read_timeout, self._ssl)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
