"""Every error dynasync raises on purpose, in one place.

Errors a user sees derive from DynasyncError: the CLI prints ``str(error)`` as
one line, and anything else is a bug that gets a traceback hint. Poison is not
a user error: it marks one row DynamoDB can never accept, and becomes a dead
letter.
"""

from __future__ import annotations

from typing import Any


class DynasyncError(Exception):
    """Base class: the message is a complete sentence a user can act on."""

    exit_code = 1


class ConfigError(DynasyncError):
    """The config file is missing, unreadable or invalid."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class UsageError(DynasyncError):
    """Command-line options that cannot go together, or a value none can take."""

    exit_code = 2


class ExportError(DynasyncError):
    """An export could not be written where it was asked to go."""


class NoRegionError(ConfigError):
    """No AWS region is set anywhere dynasync looks: it never guesses one."""


class SourceError(DynasyncError):
    """The SQLite database or one of its tables cannot be used."""


class MappingError(SourceError):
    """A mapping option that does not fit its table; `option` is the config key at fault."""

    def __init__(self, table: str, option: str, message: str) -> None:
        super().__init__(f"table {table!r}: {option}: {message}" if option else f"table {table!r}: {message}")
        self.option = option
        self.detail = message


class TableGoneError(SourceError):
    """A configured table does not exist (dropped, or renamed away by a migration): maybe for a moment."""


class StateError(DynasyncError):
    """dynasync's own tables are missing, damaged or inconsistent."""


class OwnerError(StateError):
    """The database is synced by another config file."""


class LockedError(DynasyncError):
    """Another dynasync instance holds the database."""


class KeySchemaError(DynasyncError):
    """A DynamoDB table's key schema does not match the SQLite primary key."""


class TargetError(DynasyncError):
    """DynamoDB refused or could not be reached."""


class TableMissingError(TargetError):
    """A target DynamoDB table does not exist."""

    def __init__(self, message: str, table: str = "") -> None:
        super().__init__(message)
        self.table = table


class TableExistsError(TargetError):
    """CreateTable found the table already there (an earlier attempt got through)."""


class TargetUnavailableError(TargetError):
    """DynamoDB kept failing with retryable errors until the retry budget ran out."""


class RetryableError(TargetError):
    """Throttling, a 5xx or a broken connection: the same request may succeed later.

    The adapter that raises it decides whether it was throttling, so the retry
    loop and the metrics never have to know DynamoDB's error codes.
    """

    def __init__(self, code: str, message: str, throttle: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.throttle = throttle


class ValidationError(TargetError):
    """DynamoDB refused something one item of the request caused (an invalid item,
    an item collection over its size limit); retrying it unchanged cannot help."""


class Poison(Exception):
    """A row DynamoDB can never accept; the message is the dead-letter reason."""


class Oversized(Poison):
    """An item over DynamoDB's 400 KB: a dead letter unless its table's `oversize`
    policy stores it another way (dynasync.oversize)."""

    def __init__(self, item: dict[str, Any], size: int) -> None:
        super().__init__(f"item is {size} bytes; DynamoDB allows at most 409600 (400 KB)")
        self.item = item
        self.size = size


class ProtocolError(OSError):
    """The server's reply is not HTTP/1.x as dynasync.http1 understands it: a
    connection failure (an OSError), retryable, and the connection is dropped."""


class Closed(ProtocolError):
    """The server closed (or reset) the connection before any of its reply came."""


class DeadlineExceeded(TimeoutError):
    """A request ran past its overall deadline (dynasync.http1.Deadline), however
    steadily its reply was trickling in: retryable, and its connection is reset."""


class Abandoned(Exception):
    """A DynamoDB call still running when a stop gives up on it (dynasync.workers.wait)."""
