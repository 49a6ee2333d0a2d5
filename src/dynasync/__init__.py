"""dynasync: keep Amazon DynamoDB continuously in sync with a SQLite database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "decode_item"]


def decode_item(
    item: dict[str, Any], fetch: Callable[[str, str], bytes] | None = None
) -> dict[str, Any]:
    """An item as dynasync stored it (DynamoDB's attribute-value form), as its row maps it.

    Attributes stored compressed are decompressed, and those moved to S3 are read
    through `fetch(bucket, key)` (by default boto3's default S3 client, so the
    standard AWS settings apply: credentials, region, AWS_ENDPOINT_URL_S3) and
    checked against the pointer's size and SHA-256. An item stored plainly comes
    back as it is. ValueError when the stored form is damaged or newer than this dynasync.
    """
    from dynasync import oversize

    if fetch is None:
        from dynasync import s3

        return oversize.decode(item, s3.fetch)
    return oversize.decode(item, fetch)
