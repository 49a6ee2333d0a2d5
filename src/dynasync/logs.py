"""One line per event: key=value pairs by default, JSON with --log-format json.

Code logs an event name and its fields: log.info("pass", extra=fields(changes=3)).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FIELDS = "dynasync_fields"
NOISY = ("botocore", "boto3", "urllib3", "apscheduler", "watchdog", "prometheus_client")


def fields(**values: Any) -> dict[str, Any]:
    """The `extra=` of a log call: the event's fields."""
    return {FIELDS: values}


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    out.update(getattr(record, FIELDS, {}))
    if record.exc_info:
        out["traceback"] = logging.Formatter().formatException(record.exc_info)
    return out


def _logfmt_value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    if text and all(c.isalnum() or c in "-_./:@+" for c in text):
        return text
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    """key=value pairs, quoted where needed."""

    def format(self, record: logging.LogRecord) -> str:
        """One record as one line of key=value pairs."""
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _record_fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """One record as one JSON object."""
        return json.dumps(_record_fields(record), default=str)


def setup(level: int, fmt: str = "text") -> None:
    """Send every log line to stderr in the chosen format; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
