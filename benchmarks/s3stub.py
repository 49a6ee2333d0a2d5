"""A zero-work S3 stand-in in its own process, so that dynasync's own cost of
the `s3` oversize policy shows apart from the server's (moto's standalone
server, the other S3 stand-in of the oversize benchmark, does real work in
Python). It answers, path-style, what dynasync sends S3:

* PutObject: the body is read and dropped; the object's size and its
  x-amz-checksum-sha256 (when sent) are kept, by key;
* HeadObject: that size and checksum, or 404;
* DeleteObjects: the keys are forgotten; a quiet, empty DeleteResult;
* ListObjectsV2: every kept key under the prefix, in one page;
* GetObject: an object of the kept size (zeros: nothing of it was kept).

GET /_counts (not S3's API) returns {"puts", "put_bytes", "heads", "deletes",
"deleted", "lists", "objects"}. A body sent with aws-chunked encoding or
Transfer-Encoding: chunked is read as such. Binds 127.0.0.1 only; prints its
port, then serves until killed.

Usage: python s3stub.py
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

XML = 'application/xml'
DELETE_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)


@dataclass
class Objects:
    """What the handler threads share: each kept object's (size, checksum, time), and counts."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    kept: dict[str, tuple[int, str | None, float]] = field(default_factory=dict)  # "bucket/key" ->
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("puts", "put_bytes", "heads", "deletes", "deleted", "lists"), 0))

    def count(self, name: str, n: int = 1) -> None:
        """Add to one count."""
        with self.lock:
            self.counts[name] += n


def handler(objects: Objects) -> type[BaseHTTPRequestHandler]:
    """The request handler class, over `objects`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes (see stubproc.py)

        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None,
                  length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("x-amz-request-id", "s3stub")
            self.send_header("Content-Type", XML)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload) if length is None else length))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def where(self) -> tuple[str, str, dict[str, list[str]]]:
            """(bucket, key, query) of a path-style request."""
            url = urlsplit(self.path)
            bucket, _, key = url.path.lstrip("/").partition("/")
            return bucket, unquote(key), parse_qs(url.query, keep_blank_values=True)

        def body(self) -> bytes:
            """The request body, decoded from chunked or aws-chunked framing."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raw = self._chunks()
            else:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if "aws-chunked" in self.headers.get("Content-Encoding", ""):
                return _aws_chunks(raw)
            return raw

        def _chunks(self) -> bytes:
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()

        def do_PUT(self) -> None:
            bucket, key, _ = self.where()
            data = self.body()
            checksum = self.headers.get("x-amz-checksum-sha256") or _trailer_checksum(self.headers, data)
            with objects.lock:
                objects.kept[f"{bucket}/{key}"] = (len(data), checksum, time.time())
                objects.counts["puts"] += 1
                objects.counts["put_bytes"] += len(data)
            headers = {"ETag": f'"{hashlib.md5(b"", usedforsecurity=False).hexdigest()}"'}
            if checksum:
                headers["x-amz-checksum-sha256"] = checksum
            self.reply(200, headers=headers)

        def do_HEAD(self) -> None:
            bucket, key, _ = self.where()
            objects.count("heads")
            with objects.lock:
                found = objects.kept.get(f"{bucket}/{key}")
            if found is None:
                self.reply(404)
                return
            size, checksum, modified = found
            headers = {"Last-Modified": formatdate(modified, usegmt=True), "ETag": '"stub"'}
            if checksum:
                headers["x-amz-checksum-sha256"] = checksum
            self.reply(200, headers=headers, length=size)

        def do_GET(self) -> None:
            if self.path == "/_counts":
                with objects.lock:
                    doc = {**objects.counts, "objects": len(objects.kept)}
                self.reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
                return
            bucket, key, query = self.where()
            if not key and "list-type" in query:
                self.reply(200, self._listing(bucket, query.get("prefix", [""])[0]))
                return
            with objects.lock:
                found = objects.kept.get(f"{bucket}/{key}")
            if found is None:
                self.reply(404, b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>")
                return
            self.reply(200, bytes(found[0]), {"Content-Type": "application/octet-stream",
                                              "Last-Modified": formatdate(found[2], usegmt=True)})

        def _listing(self, bucket: str, prefix: str) -> bytes:
            objects.count("lists")
            with objects.lock:
                found = sorted((k.partition("/")[2], v) for k, v in objects.kept.items()
                               if k.startswith(f"{bucket}/{prefix}"))
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><Size>{size}</Size><LastModified>"
                f"{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(modified))}</LastModified>"
                "<ETag>\"stub\"</ETag><StorageClass>STANDARD</StorageClass></Contents>"
                for k, (size, _, modified) in found)
            return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{escape(bucket)}</Name>'
                    f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(found)}</KeyCount><MaxKeys>1000</MaxKeys>"
                    f"<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>").encode()

        def do_POST(self) -> None:
            bucket, _, query = self.where()
            data = self.body()
            if "delete" not in query:
                self.reply(400, b"<Error><Code>NotImplemented</Code><Message>s3stub</Message></Error>")
                return
            keys = [unquote(k.decode()) for k in DELETE_KEY.findall(data)]
            with objects.lock:
                for k in keys:
                    objects.kept.pop(f"{bucket}/{k}", None)
                objects.counts["deletes"] += 1
                objects.counts["deleted"] += len(keys)
            self.reply(200, b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>')

    return Handler


def _aws_chunks(raw: bytes) -> bytes:
    """The payload of an aws-chunked body: "hex-size[;signature]\\r\\n data \\r\\n" ... "0\\r\\n" trailers."""
    out, at = bytearray(), 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def _trailer_checksum(headers: Any, data: bytes) -> str | None:
    """A SHA-256 checksum announced as a trailer: computed here, as S3 would check it."""
    if "x-amz-checksum-sha256" not in headers.get("x-amz-trailer", ""):
        return None
    import base64

    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class S3Stub:
    """Start s3stub.py as a child process; `endpoint` is its URL."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"s3stub did not start (got {line!r})")
        self.endpoint = f"http://127.0.0.1:{int(line)}"

    def counts(self) -> dict[str, int]:
        """What arrived so far."""
        with urllib.request.urlopen(f"{self.endpoint}/_counts", timeout=10) as r:
            return dict(json.loads(r.read()))

    def close(self) -> None:
        """Stop the child process."""
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    """Serve on a free 127.0.0.1 port, printed first, until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(Objects()))
    server.daemon_threads = True
    server.request_queue_size = 128
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
