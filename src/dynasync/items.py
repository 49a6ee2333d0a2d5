"""How the rows of one table become DynamoDB items: the table's mapping
options (columns, rename, JSON columns, key templates, computed attributes,
constants, TTL) checked against its schema once, then applied to every row.

Key templates and computed attributes may name any column. When the key
depends on more than the primary key, a row's item can move, and a deleted
row's item cannot be computed from its key: dynasync.owners remembers the
key each row last wrote.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dynasync.exceptions import MappingError, Oversized, Poison
from dynasync.schema import TableSchema
from dynasync.tableconfig import MARKER, TableConfig
from dynasync.templates import Template
from dynasync.values import (
    MAX_ITEM_BYTES,
    MAX_PARTITION_KEY_BYTES,
    MAX_SORT_KEY_BYTES,
    AttributeValue,
    InvalidText,
    Item,
    constant,
    item_size,
    json_value,
    key_value,
    normalize,
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
    templates: tuple[Template, ...]  # key templates; empty: the key columns are the key attributes
    attributes: tuple[Template, ...]  # computed string attributes
    include: frozenset[str] | None  # columns written as attributes; None: all
    exclude: frozenset[str]
    rename: dict[str, str]
    json_columns: frozenset[str]
    constants: dict[str, AttributeValue]
    ttl_column: str | None
    plain: bool  # no option set: the fast path
    _mappers: dict[tuple[str, ...], Callable[[Sequence[Any]], Item]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def key_schema(self) -> tuple[tuple[str, str], ...]:
        """The DynamoDB key schema this mapping needs: ((name, type), ...)."""
        return tuple(zip(self.key_names, self.key_types, strict=True))

    @property
    def key_from_primary_key(self) -> bool:
        """Whether the DynamoDB key is a function of the primary key alone (so a gone row's key is known)."""
        return all(f in self.schema.key for t in self.templates for f in t.fields)

    def key(self, values: Sequence[Any]) -> Item:
        """The DynamoDB key for primary-key values (as logged in the changelog);
        only when key_from_primary_key."""
        s = self.schema
        if not self.templates:
            return {
                name: key_value(values[i], s.key[i], s.key_types[i], LIMITS[i])
                for i, name in enumerate(self.key_names)
            }
        return self._render_key(dict(zip(s.key, values, strict=False)))

    def _render_key(self, by_column: dict[str, Any]) -> Item:
        out: Item = {}
        for i, t in enumerate(self.templates):
            text = t.render({f: _text(by_column[f], f, "key") for f in t.fields})
            out[t.name] = key_value(text, t.name, "S", LIMITS[i])
        return out

    @property
    def fixed(self) -> frozenset[str]:
        """The attributes an oversize policy never moves: the key, computed
        attributes, constants and the TTL attribute (indexes and TTL read them)."""
        names = {*self.key_names, *(t.name for t in self.attributes), *self.constants}
        if self.ttl_column is not None:
            names.add(self.rename.get(self.ttl_column, self.ttl_column))
        return frozenset(names)

    def key_of(self, item: Item) -> Item:
        """The key attributes of an item."""
        return {k: item[k] for k in self.key_names}

    def mapper(self, columns: Sequence[str]) -> Callable[[Sequence[Any]], Item]:
        """A function from a row read with these columns to its item: the fast path
        when the table has no mapping option, the general one (item()) otherwise."""
        names = tuple(columns)
        cached = self._mappers.get(names)
        if cached is None:
            fast = self.plain and not self.templates and not self.attributes
            cached = self._plain_mapper(names) if fast else (lambda row: self.item(names, row))
            self._mappers[names] = cached
        return cached

    def _plain_mapper(self, names: tuple[str, ...]) -> Callable[[Sequence[Any]], Item]:
        """item() for a table without options, with each column's place worked out once.
        It runs once per row: common types are mapped inline, and the exact size is
        only computed when a cheap bound says it might matter."""
        keycols, constants = self.schema.key, self.constants
        values = tuple((i, c, len(c)) for i, c in enumerate(names) if c not in keycols)
        keys = tuple(
            (name, names.index(col), col, kind, LIMITS[n])
            for n, (name, col, kind) in enumerate(zip(self.key_names, keycols, self.key_types, strict=True))
        )

        def map_row(row: Sequence[Any]) -> Item:
            result: Item = {}
            bound = 0  # >= the item size / 4, since a character is at most 4 UTF-8 bytes
            for i, col, width in values:
                v = row[i]
                if v is None:
                    continue
                t = type(v)
                if t is str:
                    result[col] = {"S": v}
                    bound += width + len(v)
                elif t is int:
                    result[col] = {"N": str(v)}
                    bound += width + 11
                elif t is float:
                    result[col] = {"N": number(v, col)}
                    bound += width + 11
                elif t is bytes:
                    result[col] = {"B": v}
                    bound += width + len(v)
                else:
                    result[col] = value(v, col)  # type: ignore[assignment]
                    bound += width + 11
            for name, i, col, kind, limit in keys:
                v = row[i]
                t = type(v)
                if kind == "N" and t is int:
                    result[name] = {"N": str(v)}
                elif kind == "S" and t is str and v and len(v) * 4 <= limit:
                    result[name] = {"S": v}
                else:
                    result[name] = key_value(v, col, kind, limit)
            if constants:
                result.update(constants)
                bound += 64 * len(constants)
            if bound * 4 + 4096 > MAX_ITEM_BYTES:
                size = item_size(result)
                if size > MAX_ITEM_BYTES:
                    raise Oversized(result, size)
            return result

        return map_row

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
        if self.templates or self.attributes:
            by_column = dict(zip(columns, row, strict=True))
            bound += self._computed(result, by_column)
            result.update(self._render_key(by_column) if self.templates else {})
        if not self.templates:
            result.update(self.key([row[columns.index(c)] for c in keycols]))
        if bound * 4 + 4096 > MAX_ITEM_BYTES:
            size = item_size(result)
            if size > MAX_ITEM_BYTES:
                raise Oversized(result, size)
        return result

    def _computed(self, result: Item, by_column: dict[str, Any]) -> int:
        """The computed attributes; one with a NULL placeholder is left out (sparse indexes)."""
        bound = 0
        for t in self.attributes:
            if any(by_column[f] is None for f in t.fields):
                continue
            text = t.render({f: _text(by_column[f], f, "attribute") for f in t.fields})
            result[t.name] = {"S": text}
            bound += len(t.name) + len(text)
        return bound

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
        """Every primary-key value a row could hold to produce this DynamoDB key,
        for a table whose key attributes are its key columns (no templates).

        A B key can come from a BLOB or from TEXT in a column with no declared
        type, so both are candidates; callers keep the rows whose own key maps
        back to exactly this one.
        """
        if self.templates or not all(name in key for name in self.key_names):
            return []
        return list(itertools.product(*(_sqlite_values(key[name]) for name in self.key_names)))

    @property
    def ownership(self) -> Ownership:
        """What an item written under this mapping looks like."""
        return Ownership(self.key_schema, self.templates, self.constants)

    def could_own(self, item: Item) -> bool:
        """Whether an item found in the target could have been written under this mapping."""
        return self.ownership.could_own(item)


@dataclass(frozen=True)
class Ownership:
    """What an item written under a mapping looks like: its key attributes and
    their types, its key templates, its constants. Kept in the state, so the
    items of a mapping the config no longer has are still recognised."""

    key_schema: tuple[tuple[str, str], ...]
    templates: tuple[Template, ...]
    constants: dict[str, AttributeValue]

    def could_own(self, item: Item) -> bool:
        """Whether an item found in the target could have been written under
        this mapping: its key attributes have its types and match its
        templates, and it carries its constants (compared as DynamoDB does)."""
        for i, (name, kind) in enumerate(self.key_schema):
            av = item.get(name)
            if av is None or kind not in av:
                return False
            if self.templates and not self.templates[i].matches(av["S"]):
                return False
        return all(k in item and normalize(item[k]) == normalize(v) for k, v in self.constants.items())

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description."""
        return {
            "key_schema": [list(k) for k in self.key_schema],
            "templates": [[t.name, t.template] for t in self.templates],
            "constants": self.constants,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Ownership:
        """Read back what to_json wrote."""
        return cls(
            tuple((str(n), str(t)) for n, t in doc["key_schema"]),
            tuple(Template.parse(n, t) for n, t in doc["templates"]),
            dict(doc["constants"]),
        )


def _text(v: Any, column: str, what: str) -> str:
    """A column value as template text."""
    if v is None:
        raise Poison(f"{what} template column {column!r} is NULL")
    if isinstance(v, InvalidText):
        raise Poison(f"column {column!r} holds text that is not valid UTF-8")
    if isinstance(v, bytes):
        raise Poison(f"{what} template column {column!r} holds a BLOB, which a template cannot render")
    return number(v, column) if isinstance(v, int | float) else str(v)


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


def problems(cfg: TableConfig, schema: TableSchema) -> list[MappingError]:
    """Every problem of a table's mapping options against its schema, not only the first."""
    return [*_column_problems(cfg, schema), *_name_problems(cfg, schema, _key_names(cfg, schema))]


def _key_names(cfg: TableConfig, schema: TableSchema) -> tuple[str, ...]:
    templates = [t for t in (cfg.partition_key, cfg.sort_key) if t is not None]
    if templates:
        return tuple(t.name for t in templates)
    rename = dict(cfg.rename)
    return tuple(rename.get(c, c) for c in schema.key)


def build(cfg: TableConfig, schema: TableSchema) -> ItemMap:
    """Check a table's mapping options against its schema; MappingError names the first problem."""
    for problem in problems(cfg, schema):
        raise problem
    rename = dict(cfg.rename)
    templates = tuple(t for t in (cfg.partition_key, cfg.sort_key) if t is not None)
    key_names = _key_names(cfg, schema)
    key_types = tuple("S" for _ in templates) if templates else schema.key_types
    constants = {name: constant(v) for name, v in cfg.constants}
    plain = not (
        cfg.columns is not None or cfg.exclude_columns or rename or cfg.json_columns or cfg.ttl_column
    )
    return ItemMap(
        schema=schema,
        key_names=key_names,
        key_types=key_types,
        templates=templates,
        attributes=cfg.attributes,
        include=frozenset(cfg.columns) if cfg.columns is not None else None,
        exclude=frozenset(cfg.exclude_columns),
        rename=rename,
        json_columns=frozenset(cfg.json_columns),
        constants=constants,
        ttl_column=cfg.ttl_column,
        plain=plain,
    )


def _column_problems(cfg: TableConfig, schema: TableSchema) -> Iterator[MappingError]:
    known = set(schema.columns) or set(schema.key) | {name for name, _ in schema.shape}
    named = [
        ("columns", cfg.columns or ()),
        ("exclude_columns", cfg.exclude_columns),
        ("json_columns", cfg.json_columns),
        ("rename", [c for c, _ in cfg.rename]),
        ("ttl_column", [cfg.ttl_column] if cfg.ttl_column else []),
        ("partition_key", cfg.partition_key.fields if cfg.partition_key else ()),
        ("sort_key", cfg.sort_key.fields if cfg.sort_key else ()),
        ("attributes", [f for t in cfg.attributes for f in t.fields]),
    ]
    for option, names in named:
        for n in names:
            if n not in known:
                yield MappingError(schema.name, option, f"names column {n!r}, which the table does not have")
    if set(cfg.json_columns) & set(schema.key):
        yield MappingError(schema.name, "json_columns", "a key column cannot be a JSON column")
    templates = [t for t in (cfg.partition_key, cfg.sort_key) if t is not None]
    if templates and not any(t.fields for t in templates):
        yield MappingError(schema.name, "partition_key", "the key templates name no column, so every row "
                                                         "would map to the same item")


def _name_problems(
    cfg: TableConfig, schema: TableSchema, key_names: tuple[str, ...]
) -> Iterator[MappingError]:
    """No two sources of one attribute: a column (renamed or not), a key, a computed attribute, a constant."""
    written = set(schema.columns) or {c for c, _ in schema.shape} | set(schema.key)
    if cfg.columns is not None:
        written &= set(cfg.columns) | (set(schema.key) if not cfg.partition_key else set())
    written -= set(cfg.exclude_columns)
    if not cfg.partition_key:
        written -= set(schema.key)  # written as the key attributes below
    rename = dict(cfg.rename)
    owners: dict[str, str] = {name: "a key attribute" for name in key_names}
    for col in sorted(written):
        name = rename.get(col, col)
        option = "rename" if col in rename else "columns"
        if name in owners:
            yield MappingError(schema.name, option, f"column {col!r} would be written as {name!r}, "
                                                    f"which is already {owners[name]}")
        owners[name] = f"column {col!r}"
    for t in cfg.attributes:
        if t.name in owners:
            clash = f"attribute {t.name!r} would overwrite {owners[t.name]}"
            yield MappingError(schema.name, "attributes", clash)
        owners[t.name] = f"computed attribute {t.name!r}"
    for name, _ in cfg.constants:
        if name in owners:
            what = "a key attribute" if name in key_names else owners[name]
            yield MappingError(schema.name, "constants", f"constant {name!r} would overwrite {what}")
        owners.setdefault(name, f"constant {name!r}")
    if cfg.oversize != "dead-letter" and MARKER in owners:
        yield MappingError(schema.name, "oversize", f"{owners[MARKER]} is written as {MARKER!r}, which marks "
                                                    "an item stored compressed or in S3: rename it")
