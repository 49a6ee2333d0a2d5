"""dynasync: keep Amazon DynamoDB continuously in sync with a SQLite database."""

__version__ = "0.1.0"
