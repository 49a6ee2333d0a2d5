"""BatchWriteItem without botocore's per-item work.

dynasync's items are already in DynamoDB's wire format, so the request body
is one json.dumps (binary values become base64, as botocore sends them).
botocore still provides what it does well: the credential chain and its
refresh, the region and endpoint, SigV4 signing, and every setting the
request depends on. The request goes where and as botocore would send it
(`Endpoint`): to the URL botocore builds for the client, with botocore's
User-Agent, TLS as botocore resolved it (certificate checks, the CA bundle, a
client certificate), and the Host header SigV4 signs (botocore's rule: lower
case, no userinfo, no default port) sent exactly as signed. Behind a proxy
botocore's own transport is used instead (dynasync.dynamodb decides).

Each thread keeps its own keep-alive connection, reused only if nothing came
on it since its last reply (dynasync.http1). Every request has an overall
deadline. Replies are checked as strictly as the protocol allows, on both
paths (dynasync.dynamodb checks botocore's with the same functions): the
CRC32 header matches the body, the body is a JSON object, and UnprocessedItems
is decoded by the attribute-value grammar. Anything else is a RetryableError.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path

from dynasync import http1
from dynasync.exceptions import Closed, DeadlineExceeded, RetryableError, TargetError
from dynasync.http1 import Deadline
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


# --- replies --------------------------------------------------------------------


class Response:
    """A reply: status, the error code and message DynamoDB named, and the JSON document."""

    def __init__(self, status: int, doc: dict[str, Any]) -> None:
        self.status = status
        self.doc = doc
        kind = doc.get("__type") if status != 200 else None
        # As botocore reads it: "com.amazonaws.dynamodb.v20120810#Code", or "Code:detail".
        self.code = kind.split(":", 1)[0].rsplit("#", 1)[-1] if isinstance(kind, str) else ""
        message = doc.get("message") or doc.get("Message")
        self.message = message if isinstance(message, str) else ""


def parse_reply(status: int, crc: str | None, payload: bytes) -> Response:
    """A reply's document: its x-amz-crc32 (if sent) matches the body, and the
    body is a JSON object, whatever the status. RetryableError otherwise."""
    if crc is not None and (not (crc.isascii() and crc.isdigit()) or int(crc) != zlib.crc32(payload)):
        raise RetryableError("CRC32Mismatch", "the response body does not match its CRC32")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise RetryableError("BadResponse", f"HTTP {status} with a body that is not a JSON object")
    return Response(status, doc)


def _bad(what: str) -> RetryableError:
    return RetryableError("BadResponse", f"UnprocessedItems is not what BatchWriteItem returns: {what}")


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _bad(f"{type(v).__name__} where a string belongs")
    return v


def _binary(v: Any) -> bytes:
    try:
        return base64.b64decode(_text(v), validate=True)
    except binascii.Error:
        raise _bad("a binary value that is not base64") from None


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _bad(f"{type(v).__name__} where a list belongs")
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _bad(f"{type(v).__name__} where a boolean belongs")
    return v


def _item(v: Any) -> dict[str, Any]:
    """A map of names to attribute values (an item, a key, an M value)."""
    if not isinstance(v, dict):
        raise _bad(f"{type(v).__name__} where a map of attribute values belongs")
    return {name: _value(av) for name, av in v.items()}


# The attribute-value grammar: each type and how its value is decoded. A name
# is only ever a type where an attribute value is expected, never inside an
# item or an M value, whose keys are attribute names.
_TYPES: dict[str, Callable[[Any], Any]] = {
    "S": _text, "N": _text, "B": _binary,
    "SS": lambda v: [_text(x) for x in _list(v)],
    "NS": lambda v: [_text(x) for x in _list(v)],
    "BS": lambda v: [_binary(x) for x in _list(v)],
    "M": _item, "L": lambda v: [_value(x) for x in _list(v)],
    "NULL": _flag, "BOOL": _flag,
}


def _value(av: Any) -> dict[str, Any]:
    """One attribute value: a single type and its value."""
    if not isinstance(av, dict) or len(av) != 1:
        raise _bad("an attribute value that is not a single type and its value")
    ((kind, v),) = av.items()
    decode = _TYPES.get(kind)
    if decode is None:
        raise _bad(f"an attribute value of unknown type {kind[:20]!r}")
    return {kind: decode(v)}


def _request(r: Any) -> WriteRequest:
    if isinstance(r, dict) and len(r) == 1:
        put, delete = r.get("PutRequest"), r.get("DeleteRequest")
        if isinstance(put, dict) and put.keys() == {"Item"}:
            return {"PutRequest": {"Item": _item(put["Item"])}}
        if isinstance(delete, dict) and delete.keys() == {"Key"}:
            return {"DeleteRequest": {"Key": _item(delete["Key"])}}
    raise _bad("a request that is neither a PutRequest with an Item nor a DeleteRequest with a Key")


def unprocessed_items(doc: dict[str, Any]) -> dict[str, list[WriteRequest]]:
    """A BatchWriteItem reply's UnprocessedItems, table by table, binary values as
    bytes again; RetryableError if they are not what the protocol says."""
    items = doc.get("UnprocessedItems")
    if items is None:
        return {}
    if not isinstance(items, dict):
        raise _bad(f"a {type(items).__name__}, not a map of tables")
    return {table: [_request(r) for r in _list(requests)] for table, requests in items.items()}


# --- the client -------------------------------------------------------------------


def tls_context(
    base: ssl.SSLContext, verify: bool | str, cert: str | None, key: str | None
) -> ssl.SSLContext:
    """botocore's TLS settings on its own base context: `verify` False (no checks),
    True (botocore's default bundle) or a CA bundle's path, and a client certificate."""
    if verify:
        base.verify_mode = ssl.CERT_REQUIRED
        base.check_hostname = True
        base.load_verify_locations(cafile=get_cert_path(True) if verify is True else verify)
    else:
        base.check_hostname = False
        base.verify_mode = ssl.CERT_NONE
    if cert:
        base.load_cert_chain(cert, key)
    return base


@dataclass(frozen=True)
class Endpoint:
    """Where and how BatchWriteItem goes, as botocore resolved it for the client."""

    url: str  # the request URL botocore builds
    user_agent: str
    tls: ssl.SSLContext | None  # for an https URL


class WireClient:
    """Signed BatchWriteItem requests over per-thread keep-alive connections."""

    def __init__(
        self,
        endpoint: Endpoint,
        region: str,
        credentials: Callable[[], Any],
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        url = urlsplit(endpoint.url)
        self.url = endpoint.url
        self.host = url.hostname or ""  # lower case, no userinfo, no brackets
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.region = region
        self.user_agent = endpoint.user_agent
        self.tls = endpoint.tls
        # The Host SigV4 signs when a request names none: put in every request
        # before signing, so the header sent is the one signed.
        signer = SigV4Auth(None, "dynamodb", region)  # type: ignore[arg-type]  # headers_to_sign needs no credentials
        self.host_header = signer.headers_to_sign(AWSRequest(method="POST", url=self.url))["host"]
        self._credentials = credentials
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._local = threading.local()

    def batch_write(self, table: str, requests: Sequence[WriteRequest], deadline: Deadline) -> Response:
        """Send one BatchWriteItem, answered by the deadline; the reply (any status).
        RetryableError when the connection fails, the deadline passes or the reply is malformed."""
        payload = body(table, requests)
        request = http1.request_bytes("POST", self.path, self._sign(payload), payload)
        try:
            reply = self._exchange(request, deadline)
        except OSError as e:
            self._local.conn = None  # a failed exchange has reset it already
            code = "DeadlineExceeded" if isinstance(e, DeadlineExceeded) else type(e).__name__
            raise RetryableError(code, str(e) or "connection failed") from e
        if not reply.keep_alive:
            self._drop()
        return parse_reply(reply.status, reply.headers.get("x-amz-crc32"), reply.body)

    def _exchange(self, request: bytes, deadline: Deadline) -> http1.Reply:
        conn = self._connection(deadline)
        try:
            return conn.exchange(request, deadline)
        except Closed:
            self._local.conn = None
            if not conn.exchanges:
                raise
            # A kept-alive connection the server closed just as it was reused:
            # sent again at once on a new one (writes are idempotent), not
            # counted as a failed request and retried after a backoff.
            return self._connection(deadline).exchange(request, deadline)

    def _sign(self, payload: bytes) -> dict[str, str]:
        creds = self._credentials()
        if creds is None:
            raise TargetError("no AWS credentials found (set AWS_ACCESS_KEY_ID or a profile)")
        request = AWSRequest(method="POST", url=self.url, data=payload,
                             headers={"Host": self.host_header, "Content-Type": CONTENT_TYPE,
                                      "X-Amz-Target": TARGET, "User-Agent": self.user_agent})
        SigV4Auth(creds, "dynamodb", self.region).add_auth(request)
        headers = dict(request.headers.items())
        headers["Content-Length"] = str(len(payload))
        return headers

    def _connection(self, deadline: Deadline) -> http1.Connection:
        """This thread's connection, if it can carry another request; a new one otherwise."""
        conn: http1.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.reusable():
            conn.close()
            conn = None
        if conn is None:
            conn = http1.Connection(self.host, self.port, self.connect_timeout, self.read_timeout, deadline,
                                    self.tls)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
