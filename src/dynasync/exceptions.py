"""Every error dynasync raises on purpose derives from DynasyncError.

The CLI prints ``str(error)`` as one line; anything else is a bug and gets a
traceback hint.
"""

from __future__ import annotations


class DynasyncError(Exception):
    """Base class: the message is a complete sentence a user can act on."""

    exit_code = 1


class ConfigError(DynasyncError):
    """The config file is missing, unreadable or invalid."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class SourceError(DynasyncError):
    """The SQLite database or one of its tables cannot be used."""


class StateError(DynasyncError):
    """dynasync's own tables are missing, damaged or inconsistent."""


class LockedError(DynasyncError):
    """Another dynasync instance holds the database."""


class TargetError(DynasyncError):
    """DynamoDB refused or could not be reached."""


class TableMissingError(TargetError):
    """A target DynamoDB table does not exist."""


class TargetUnavailableError(TargetError):
    """DynamoDB kept failing with retryable errors until the retry budget ran out."""


class KeySchemaError(DynasyncError):
    """A DynamoDB table's key schema does not match the SQLite primary key."""
