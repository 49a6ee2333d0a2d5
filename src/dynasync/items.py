"""How the rows of one table become DynamoDB items: the table's mapping
options (columns, rename, JSON columns, key templates, constants, TTL)
checked against its schema once, then applied to every row.

A key template may only name primary-key columns: a deleted row is known by
its key alone, and its DynamoDB key must still be computable.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dynasync.config import TableConfig
from dynasync.exceptions import Poison, SourceError
from dynasync.schema import TableSchema
from dynasync.templates import KeyTemplate, group
from dynasync.values import (
    MAX_ITEM_BYTES,
    MAX_PARTITION_KEY_BYTES,
    MAX_SORT_KEY_BYTES,
    AttributeValue,
    Item,
    constant,
    item_size,
    json_value,
    key_value,
    number,
    ttl_value,
    value,
)

LIMITS = (MAX_PARTITION_KEY_BYTES, MAX_SORT_KEY_BYTES)


@dataclass(frozen=True)
class ItemMap:
    """A table's mapping options, checked against its schema: turns rows into items and keys."""

    schema: TableSchema
    key_names: tuple[str, ...]  # DynamoDB key attributes, partition key first
    key_types: tuple[str, ...]
    templates: tuple[KeyTemplate, ...]  # empty: the key columns are the key attributes
    include: frozenset[str] | None  # columns written as attributes; None: all
    exclude: frozenset[str]
    rename: dict[str, str]
    json_columns: frozenset[str]
    constants: dict[str, AttributeValue]
    ttl_column: str | None
    plain: bool  # no option set: the fast path

    @property
    def key_schema(self) -> tuple[tuple[str, str], ...]:
        """The DynamoDB key schema this mapping needs: ((name, type), ...)."""
        return tuple(zip(self.key_names, self.key_types, strict=True))

    def key(self, values: Sequence[Any]) -> Item:
        """The DynamoDB key for primary-key values (as logged in the changelog)."""
        s = self.schema
        if not self.templates:
            return {
                name: key_value(values[i], s.key[i], s.key_types[i], LIMITS[i])
                for i, name in enumerate(self.key_names)
            }
        by_column = dict(zip(s.key, values, strict=False))
        out: Item = {}
        for i, t in enumerate(self.templates):
            parts = {}
            for f in t.fields:
                v = by_column[f]
                if v is None:
                    raise Poison(f"key column {f!r} is NULL")
                if isinstance(v, bytes):
                    raise Poison(f"key column {f!r} holds a BLOB, which a key template cannot render")
                parts[f] = number(v, f) if isinstance(v, int | float) else v
            out[t.name] = key_value(t.render(parts), t.name, "S", LIMITS[i])
        return out

    def key_of(self, item: Item) -> Item:
        """The key attributes of an item."""
        return {k: item[k] for k in self.key_names}

    def item(self, columns: Sequence[str], row: Sequence[Any]) -> Item:
        """The whole item for a row; columns are the row's column names.

        This runs once per row, so common types are mapped inline and the exact
        size is only computed when a cheap bound says it might matter.
        """
        result: Item = {}
        keycols = self.schema.key
        skip_key = not self.templates
        bound = 0  # >= the item size / 4, since a character is at most 4 UTF-8 bytes
        for col, v in zip(columns, row, strict=True):
            if v is None or (skip_key and col in keycols):
                continue
            if not self.plain:
                bound += self._optional(result, col, v)
                continue
            t = type(v)
            if t is str:
                result[col] = {"S": v}
                bound += len(v)
            elif t is int:
                result[col] = {"N": str(v)}
                bound += 11
            elif t is bytes:
                result[col] = {"B": v}
                bound += len(v)
            else:
                result[col] = value(v, col)  # type: ignore[assignment]
                bound += 11
            bound += len(col)
        if self.constants:
            result.update(self.constants)
            bound += 64 * len(self.constants)
        result.update(self.key([row[columns.index(c)] for c in keycols]))
        if bound * 4 + 4096 > MAX_ITEM_BYTES:
            size = item_size(result)
            if size > MAX_ITEM_BYTES:
                raise Poison(f"item is {size} bytes; DynamoDB allows at most {MAX_ITEM_BYTES} (400 KB)")
        return result

    def _optional(self, result: Item, col: str, v: Any) -> int:
        """Map one column under the table's options; returns its share of the size bound."""
        if (self.include is not None and col not in self.include) or col in self.exclude:
            return 0
        name = self.rename.get(col, col)
        if col in self.json_columns:
            av = json_value(v, col)
        elif col == self.ttl_column:
            av = ttl_value(v, col)
        else:
            av = value(v, col)  # type: ignore[assignment]
        result[name] = av
        return len(name) + (len(v) if isinstance(v, str | bytes) else 11)

    def key_candidates(self, key: Item) -> list[tuple[Any, ...]]:
        """Every primary-key value a row could hold to produce this DynamoDB key
        (empty when no row of this table can: another table sharing the target).

        A B key can come from a BLOB or from TEXT in a column with no declared
        type, so both are candidates; callers keep the rows whose own key maps
        back to exactly this one.
        """
        if not self.templates:
            per_column = [_sqlite_values(key[name]) for name in self.key_names]
        else:
            found: dict[str, str] = {}
            for t in self.templates:
                av = key.get(t.name, {})
                groups = t.match(av["S"]) if "S" in av else None
                if groups is None:
                    return []
                found.update(groups)
            per_column = [
                _template_values(found[group(col)], kt)
                for col, kt in zip(self.schema.key, self.schema.key_types, strict=True)
            ]
        return list(itertools.product(*per_column))

    def constants_match(self, item: Item) -> bool:
        """Whether an item carries this table's constants, which tell apart tables sharing a target."""
        return all(item.get(k) == v for k, v in self.constants.items())


def _sqlite_values(av: AttributeValue) -> list[Any]:
    """The SQLite values a key attribute value can come from."""
    ((kind, v),) = av.items()
    if kind == "N":
        d = Decimal(v)
        if d == d.to_integral_value() and -(2**63) <= d < 2**63:
            return [int(d)]
        return [float(d)]
    if kind == "B":
        raw = bytes(v)
        try:
            return [raw, raw.decode("utf-8")]
        except UnicodeDecodeError:
            return [raw]
    return [v]


def _template_values(text: str, key_type: str) -> list[Any]:
    """The values a key column can hold to render as `text` in a template."""
    if key_type != "N":
        return [text]
    try:
        d = Decimal(text)
    except ArithmeticError:
        return []
    return [int(d) if d == d.to_integral_value() and "." not in text else float(d)]


def build(cfg: TableConfig, schema: TableSchema) -> ItemMap:
    """Check a table's mapping options against its schema; SourceError names the problem."""
    _check_columns(cfg, schema)
    rename = dict(cfg.rename)
    templates = tuple(t for t in (cfg.partition_key, cfg.sort_key) if t is not None)
    if templates:
        _check_templates(templates, schema)
        key_names = tuple(t.name for t in templates)
        key_types = tuple("S" for _ in templates)
    else:
        key_names = tuple(rename.get(c, c) for c in schema.key)
        key_types = schema.key_types
    constants = {name: constant(v) for name, v in cfg.constants}
    clash = set(constants) & set(key_names)
    if clash:
        raise SourceError(
            f"table {schema.name!r}: constant {sorted(clash)[0]!r} would overwrite a key attribute"
        )
    plain = not (
        cfg.columns is not None or cfg.exclude_columns or rename or cfg.json_columns or cfg.ttl_column
    )
    return ItemMap(
        schema=schema,
        key_names=key_names,
        key_types=key_types,
        templates=templates,
        include=frozenset(cfg.columns) if cfg.columns is not None else None,
        exclude=frozenset(cfg.exclude_columns),
        rename=rename,
        json_columns=frozenset(cfg.json_columns),
        constants=constants,
        ttl_column=cfg.ttl_column,
        plain=plain,
    )


def _check_columns(cfg: TableConfig, schema: TableSchema) -> None:
    known = set(schema.key) | {name for name, _ in schema.shape}
    named = [
        ("columns", cfg.columns or ()),
        ("exclude_columns", cfg.exclude_columns),
        ("json_columns", cfg.json_columns),
        ("rename", [c for c, _ in cfg.rename]),
        ("ttl_column", [cfg.ttl_column] if cfg.ttl_column else []),
    ]
    for option, names in named:
        for n in names:
            if n not in known:
                raise SourceError(
                    f"table {schema.name!r}: {option} names column {n!r}, which it does not have"
                )
    if set(cfg.json_columns) & set(schema.key):
        raise SourceError(f"table {schema.name!r}: a key column cannot be a JSON column")


def _check_templates(templates: Sequence[KeyTemplate], schema: TableSchema) -> None:
    table = schema.name
    if len({t.name for t in templates}) < len(templates):
        raise SourceError(f"table {table!r}: partition and sort key need different names")
    used = [f for t in templates for f in t.fields]
    for f in used:
        if f not in schema.key:
            raise SourceError(
                f"table {table!r}: key template placeholder {{{f}}} is not a primary-key column "
                f"(primary key: {', '.join(schema.key)})"
            )
        if schema.key_types[schema.key.index(f)] == "B":
            raise SourceError(f"table {table!r}: BLOB key column {f!r} cannot appear in a key template")
    if set(used) != set(schema.key):
        raise SourceError(
            f"table {table!r}: the key templates must name every primary-key column "
            f"({', '.join(schema.key)}), or rows would collide"
        )
