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
# Lines libraries log at ERROR about nothing wrong, by logger: watchdog's inotify
# emitter logs this when it is stopped while its thread is between two reads, a
# benign race of every clean stop. An ERROR on every normal stop would teach
# operators to ignore errors.
BENIGN = {"watchdog.observers.inotify": "called when the thread is inactive"}


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


class _Benign(logging.Filter):
    """Drops the records of one logger whose message contains a known text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but those."""
        return self.text not in record.getMessage()


def setup(level: int, fmt: str = "text") -> None:
    """Send every log line to stderr in the chosen format; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, text in BENIGN.items():
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, _Benign)]
        logger.addFilter(_Benign(text))
