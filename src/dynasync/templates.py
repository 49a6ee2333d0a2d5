"""String templates over a row's columns, for single-table design:
`PK = "USER#{user_id}"` renders a key or an attribute from column values.

Parsing needs no schema, so template syntax is checked with the config.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """An attribute built from columns: `name = "PK", template = "USER#{id}"`."""

    name: str  # the DynamoDB attribute
    template: str
    fields: tuple[str, ...]  # the columns it names, in order
    parts: tuple[tuple[str, str | None], ...]  # (literal text, field after it or None)

    @classmethod
    def parse(cls, name: str, template: str) -> Template:
        """Parse a template; ValueError says what is wrong with it."""
        fields: list[str] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ValueError(f"template {template!r} does not parse: {e}") from None
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if not field:
                raise ValueError(f"template {template!r} has an empty {{}} placeholder")
            if spec or conversion:
                raise ValueError(f"template {template!r}: placeholders take no format spec")
            if field in fields:
                raise ValueError(f"template {template!r} names {{{field}}} twice")
            fields.append(field)
        parts = tuple((literal, field or None) for literal, field, _, _ in parsed)
        return cls(name, template, tuple(fields), parts)

    @property
    def separable(self) -> bool:
        """Whether literal text stands between every two placeholders: `A#{x}{y}`
        cannot tell `x="1", y="23"` from `x="12", y="3"`."""
        return all(literal for literal, field in self.parts[1:] if field is not None)

    def render(self, values: Mapping[str, str]) -> str:
        """The text for the fields' values (placed literally: no format() lookups)."""
        return "".join(literal + (values[field] if field else "") for literal, field in self.parts)

    def matches(self, text: str) -> bool:
        """Whether this template could have rendered `text` (values may be empty).

        Linear in the text: each literal is found after the previous one, and the
        last is anchored at the end. (A regular expression would backtrack
        exponentially in the placeholders on a key that does not match.)
        """
        literals = [literal for literal, _ in self.parts]
        if not self.fields:
            return text == "".join(literals)
        trailing = self.parts[-1][1] is None  # a literal after the last placeholder
        last = literals.pop() if trailing else ""
        if not text.startswith(literals[0]) or not text.endswith(last):
            return False
        pos, end = len(literals[0]), len(text) - len(last)
        for literal in literals[1:]:
            found = text.find(literal, pos, end)
            if found < 0:
                return False
            pos = found + len(literal)
        return pos <= end
