"""One [[tables]] entry of the config: its keys, their types, and every check
that needs no database (template syntax, attribute names that would clash,
the shape of a row filter). What needs the table itself (its columns) is
checked when the table is inspected (dynasync.items, dynasync.tables), and
`dynasync config check` runs those too when the database exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dynasync import values
from dynasync.exceptions import Poison
from dynasync.problems import Problems
from dynasync.templates import Template

OVERSIZE_POLICIES = ("dead-letter", "compress", "s3")
# The attribute that marks an item stored compressed or with attributes in S3 (dynasync.oversize).
MARKER = "_dynasync"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")

# The keys of a [[tables]] entry, with what each holds.
TABLE_KEYS = {
    "source": "SQLite table",
    "target": "DynamoDB table",
    "columns": "list of columns to write (default: all)",
    "exclude_columns": "list of columns never to write",
    "rename": "{ sqlite_column = \"attributeName\" }",
    "json_columns": "TEXT columns holding JSON, written as maps and lists",
    "partition_key": "{ name = \"PK\", template = \"USER#{user_id}\" } over any columns",
    "sort_key": "{ name = \"SK\", template = \"ORDER#{id}\" } over any columns",
    "attributes": "{ GSI1PK = \"EMAIL#{email}\" }: string attributes from templates over any columns",
    "where": "an SQL expression over the table's columns: only matching rows are synced",
    "constants": "{ attribute = value } written on every item",
    "ttl_column": "INTEGER/REAL epoch-seconds column written as the TTL attribute",
    "oversize": 'what becomes of an item over 400 KB: "dead-letter", "compress" or "s3"',
}


@dataclass(frozen=True)
class TableConfig:
    """One [[tables]] entry: a source table, its target and its mapping options."""

    source: str
    target: str
    columns: tuple[str, ...] | None = None
    exclude_columns: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    json_columns: tuple[str, ...] = ()
    partition_key: Template | None = None
    sort_key: Template | None = None
    attributes: tuple[Template, ...] = ()
    where: str | None = None
    constants: tuple[tuple[str, Any], ...] = ()
    ttl_column: str | None = None
    oversize: str = "dead-letter"  # dynasync.oversize.POLICIES
    section: str = field(default="", compare=False)  # "tables N": where its problems are reported


def parse_tables(value: Any, problems: Problems) -> tuple[TableConfig, ...]:
    """Every [[tables]] entry; problems are added, never raised."""
    if value is None:
        problems.add("tables", None, "no [[tables]] configured")
        return ()
    if not isinstance(value, list) or not value:
        problems.add("tables", None, "[[tables]] must be a non-empty array of tables")
        return ()
    tables: list[TableConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(value, start=1):
        name = f"tables {i}"
        if not isinstance(entry, dict):
            problems.add(name, None, "must be a table")
            continue
        for key in entry:
            if key not in TABLE_KEYS:
                problems.add(name, key, "is not a known key")
        source, target = entry.get("source"), entry.get("target")
        if not isinstance(source, str) or not source:
            problems.add(name, "source", "must be the SQLite table name")
            continue
        if not isinstance(target, str) or not target:
            problems.add(name, "target", "must be the DynamoDB table name")
            continue
        _check_names(source, target, seen, name, problems)
        options = _mapping_options(entry, name, problems)
        tables.append(TableConfig(source=source, target=target, section=name, **options))
    return tuple(tables)


def _check_names(source: str, target: str, seen: set[str], name: str, problems: Problems) -> None:
    if not _TABLE_NAME.fullmatch(target):
        problems.add(name, "target", f"{target!r} is not a valid DynamoDB table name (3-255 characters: "
                                     "a-z, A-Z, 0-9, '_', '-', '.')")
    lowered = source.lower()
    if "\x00" in source:
        problems.add(name, "source", "contains a NUL character")
    elif lowered.startswith(("_dynasync_", "sqlite_")):
        problems.add(name, "source", f"{source!r} is an internal table and cannot be synced")
    elif lowered in seen:
        problems.add(name, "source", f"table {source!r} is configured twice")
    seen.add(lowered)


def _names(entry: dict[str, Any], key: str, section: str, problems: Problems) -> tuple[str, ...] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.add(section, key, "must be a list of column names")
        return None
    return tuple(value)


def _template(name: str, text: Any, key: str, section: str, problems: Problems) -> Template | None:
    if not isinstance(text, str) or not text or not name:
        problems.add(section, key, f"{name or 'the name'}: must be a non-empty template string")
        return None
    try:
        return Template.parse(name, text)
    except ValueError as e:
        problems.add(section, key, str(e))
        return None


def _key_template(entry: dict[str, Any], key: str, section: str, problems: Problems) -> Template | None:
    value = entry.get(key)
    if value is None:
        return None
    shaped = isinstance(value, dict) and set(value) == {"name", "template"} and isinstance(value["name"], str)
    if not shaped:
        problems.add(section, key, 'must be { name = "PK", template = "PREFIX#{column}" }')
        return None
    t = _template(value["name"], value["template"], key, section, problems)
    if t is not None and not t.separable:
        problems.add(section, key, f"template {t.template!r}: two placeholders touch, so their values "
                                   "cannot be told apart (put a separator between them)")
        return None
    return t


def _attributes(entry: dict[str, Any], section: str, problems: Problems) -> tuple[Template, ...]:
    value = entry.get("attributes", {})
    if not isinstance(value, dict):
        problems.add(section, "attributes", 'must be { GSI1PK = "EMAIL#{email}", ... }')
        return ()
    parsed = (_template(name, text, "attributes", section, problems) for name, text in value.items())
    return tuple(t for t in parsed if t is not None)


def _where(entry: dict[str, Any], section: str, problems: Problems) -> str | None:
    value = entry.get("where")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.add(section, "where", "must be an SQL expression over the table's columns")
        return None
    return value.strip()


def _mapping_options(entry: dict[str, Any], section: str, problems: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {
        "columns": _names(entry, "columns", section, problems),
        "exclude_columns": _names(entry, "exclude_columns", section, problems) or (),
        "json_columns": _names(entry, "json_columns", section, problems) or (),
        "partition_key": _key_template(entry, "partition_key", section, problems),
        "sort_key": _key_template(entry, "sort_key", section, problems),
        "attributes": _attributes(entry, section, problems),
        "where": _where(entry, section, problems),
    }
    rename = entry.get("rename", {})
    if not isinstance(rename, dict) or not all(isinstance(v, str) and v for v in rename.values()):
        problems.add(section, "rename", 'must be { sqlite_column = "attributeName" }')
        rename = {}
    out["rename"] = tuple(rename.items())
    out["constants"] = _constants(entry, section, problems)
    ttl = entry.get("ttl_column")
    if ttl is not None and (not isinstance(ttl, str) or not ttl):
        problems.add(section, "ttl_column", "must be a column name")
        ttl = None
    out["ttl_column"] = ttl
    out["oversize"] = _oversize(entry, section, problems)
    _check_attribute_names(out, section, problems)
    return out


def _oversize(entry: dict[str, Any], section: str, problems: Problems) -> str:
    value = entry.get("oversize", "dead-letter")
    if value not in OVERSIZE_POLICIES:
        problems.add(section, "oversize", 'must be "dead-letter", "compress" or "s3"')
        return "dead-letter"
    return str(value)


def _constants(entry: dict[str, Any], section: str, problems: Problems) -> tuple[tuple[str, Any], ...]:
    """`constants`: attribute names with strings, numbers DynamoDB can store, or booleans."""
    constants = entry.get("constants", {})
    if not isinstance(constants, dict) or not all(
        isinstance(v, str | int | float | bool) for v in constants.values()
    ):
        problems.add(section, "constants", "must map attribute names to strings, numbers or booleans")
        return ()
    for name, v in constants.items():
        if not name:
            problems.add(section, "constants", "an attribute name cannot be empty")
        try:
            values.constant(v)
        except Poison as e:
            problems.add(section, "constants", f"{name!r}: {e}")
    return tuple(constants.items())


def _check_attribute_names(out: dict[str, Any], section: str, problems: Problems) -> None:
    """Key templates need a partition key; no two sources may write one attribute name."""
    pk: Template | None = out["partition_key"]
    sk: Template | None = out["sort_key"]
    if sk is not None and pk is None:
        problems.add(section, "sort_key", "needs a partition_key template too")
    if pk is not None and sk is not None and pk.name == sk.name:
        problems.add(section, "sort_key", "partition and sort key need different names")
    taken = {t.name: f"the {k}" for k, t in (("partition_key", pk), ("sort_key", sk)) if t is not None}
    for t in out["attributes"]:
        if t.name in taken:
            problems.add(section, "attributes", f"attribute {t.name!r} would overwrite {taken[t.name]}")
        taken.setdefault(t.name, f"computed attribute {t.name!r}")
    for name, _ in out["constants"]:
        if name in taken:
            problems.add(section, "constants", f"constant {name!r} would overwrite {taken[name]}")
        taken.setdefault(name, f"constant {name!r}")
    for column, name in out["rename"]:
        if name in taken:
            problems.add(section, "rename", f"{column!r} renamed to {name!r} would overwrite {taken[name]}")
        taken.setdefault(name, f"column {column!r} (renamed)")
    if out["oversize"] != "dead-letter" and MARKER in taken:
        problems.add(section, "oversize", f"{taken[MARKER]} is named {MARKER!r}, which marks an item stored "
                                          "compressed or in S3: rename it")
