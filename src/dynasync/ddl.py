"""Reading the application's own SQL text: index terms and conditions, column
definitions, and the columns an expression refers to.

A small tokenizer that knows SQL's quotes and comments does the work; what
it reads back is checked by SQLite itself where a mistake would matter
(dynasync.schema compiles each index expression over the columns found).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

_TOKEN = re.compile(
    r"""
     (?P<string>'(?:[^']|'')*'?)
    |(?P<quoted>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
    |(?P<comment>--[^\n]*|/\*(?:.|\n)*?(?:\*/|$))
    |(?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<space>\s+)
    |(?P<symbol>.)
    """,
    re.X | re.S,
)
# Words that are SQL, not names, where an expression can hold them.
_KEYWORDS = frozenset(
    {"AND", "OR", "NOT", "IS", "IN", "LIKE", "GLOB", "REGEXP", "MATCH", "BETWEEN", "ESCAPE", "NULL",
     "NOTNULL", "ISNULL", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST", "AS", "COLLATE", "EXISTS",
     "SELECT", "FROM", "WHERE", "DISTINCT", "TRUE", "FALSE", "CURRENT_DATE", "CURRENT_TIME",
     "CURRENT_TIMESTAMP", "ASC", "DESC"}
)


class Token(NamedTuple):
    """One SQL token: its kind, its text and where it starts."""

    kind: str  # string, quoted, comment, word, number, space or symbol
    text: str
    start: int


def tokens(text: str) -> Iterator[Token]:
    """Every token of `text`, spaces and comments included."""
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "symbol"
        yield Token(kind, m.group(0), m.start())


def strip_comments(text: str) -> str:
    """The SQL with each comment replaced by a space: safe to copy onto one line."""
    return "".join(" " if t.kind == "comment" else t.text for t in tokens(text)).strip()


def name_of(token: Token) -> str:
    """A word's or quoted identifier's name, unquoted."""
    if token.kind != "quoted":
        return token.text
    quote, body = token.text[0], token.text[1:-1]
    return body if quote == "[" else body.replace(quote * 2, quote)


def index_parts(ddl: str) -> tuple[list[str], str | None]:
    """The terms of CREATE INDEX ... ON t (term, ...) [WHERE cond] as SQL text
    (comments, ASC and DESC removed), and the condition of a partial index."""
    ddl = strip_comments(ddl)
    depth, terms, begin = 0, [], None
    for t in tokens(ddl):
        if t.text == "(":
            depth += 1
            if depth == 1 and begin is None:
                begin = t.start + 1
                continue
        elif t.text == ")":
            depth -= 1
        if begin is not None and ((t.text == "," and depth == 1) or (t.text == ")" and depth == 0)):
            terms.append(_strip_order(ddl[begin : t.start]))
            begin = t.start + 1
        if t.text == ")" and depth == 0 and terms:
            rest = ddl[t.start + 1 :].strip().rstrip(";").strip()
            where = rest[5:].strip() if rest[:5].upper() == "WHERE" else None
            return terms, where or None
    raise ValueError(f"cannot parse index definition {ddl!r}")


def _strip_order(term: str) -> str:
    return re.sub(r"\s+(ASC|DESC)\s*$", "", term.strip(), flags=re.I)


def column_definitions(ddl: str) -> dict[str, str]:
    """Each column's definition in CREATE TABLE, by lower-cased name, comments
    stripped and spaces folded (table constraints are left out)."""
    ddl = strip_comments(ddl)
    depth, parts, begin = 0, [], 0
    for t in tokens(ddl):
        if t.text == "(":
            depth += 1
            if depth == 1:
                begin = t.start + 1
        elif t.text == ")":
            depth -= 1
            if depth == 0:
                parts.append(ddl[begin : t.start])
                break
        elif t.text == "," and depth == 1:
            parts.append(ddl[begin : t.start])
            begin = t.start + 1
    out = {}
    for part in parts:
        first = next((t for t in tokens(part) if t.kind in ("word", "quoted")), None)
        if first is None or (first.kind == "word" and first.text.upper() in _CONSTRAINTS):
            continue
        out[name_of(first).lower()] = " ".join(part.split())
    return out


_CONSTRAINTS = frozenset({"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"})


def names_used(expression: str, columns: Sequence[str]) -> tuple[str, ...]:
    """The columns an expression refers to: names that are not functions
    (followed by "("), types (after AS), collations or keywords."""
    words = [t for t in tokens(expression) if t.kind not in ("space", "comment")]
    found = set()
    for i, t in enumerate(words):
        if t.kind not in ("word", "quoted"):
            continue
        before = words[i - 1].text.upper() if i else ""
        after = words[i + 1].text if i + 1 < len(words) else ""
        if t.kind == "word" and (t.text.upper() in _KEYWORDS or after == "(" or before in ("AS", "COLLATE")):
            continue
        found.add(name_of(t).lower())
    return tuple(c for c in columns if c.lower() in found)
