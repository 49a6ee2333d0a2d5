"""Key templates for single-table design: "USER#{id}" renders a string key
from column values, and parses back into them for `verify`.

Parsing needs no schema, so template syntax is checked with the config.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyTemplate:
    """A key attribute built from columns: `name = "PK", template = "USER#{id}"`."""

    name: str  # the DynamoDB attribute
    template: str
    fields: tuple[str, ...]  # the columns it names, in order
    pattern: re.Pattern[str]  # matches a rendered key, one named group per field
    parts: tuple[tuple[str, str | None], ...]  # (literal text, field after it or None)

    @classmethod
    def parse(cls, name: str, template: str) -> KeyTemplate:
        """Parse a template; ValueError says what is wrong with it."""
        fields: list[str] = []
        pattern = ""
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ValueError(f"template {template!r} does not parse: {e}") from None
        for literal, field, spec, conversion in parsed:
            pattern += re.escape(literal)
            if field is None:
                continue
            if not field:
                raise ValueError(f"template {template!r} has an empty {{}} placeholder")
            if spec or conversion:
                raise ValueError(f"template {template!r}: placeholders take no format spec")
            if field in fields:
                raise ValueError(f"template {template!r} names {{{field}}} twice")
            fields.append(field)
            pattern += f"(?P<{group(field)}>.+?)"
        parts = tuple((literal, field or None) for literal, field, _, _ in parsed)
        return cls(name, template, tuple(fields), re.compile(pattern), parts)

    def render(self, values: Mapping[str, str]) -> str:
        """The key text for the fields' values (placed literally: no format() lookups)."""
        return "".join(literal + (values[field] if field else "") for literal, field in self.parts)

    def match(self, text: str) -> dict[str, str] | None:
        """The field values a rendered key was made from (by regex group name), or None."""
        m = self.pattern.fullmatch(text)
        return m.groupdict() if m else None


def group(field: str) -> str:
    """A regex group name for a column name (any text)."""
    return field if field.isidentifier() else "c" + "".join(f"{ord(c):x}" for c in field)
