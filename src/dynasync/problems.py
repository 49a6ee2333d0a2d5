"""Problems found in a config file, each reported with the file, its line
when it can be found, and the `[section] key` it concerns."""

from __future__ import annotations

import re

from dynasync.exceptions import ConfigError


class Problems:
    """Every problem found in a config file, each with the file, the line when
    it can be found, and the [section] key."""

    def __init__(self, where: str, text: str | None = None) -> None:
        self.where = where
        self.items: list[str] = []
        self._lines = _index_lines(text) if text else {}

    def add(self, section: str, key: str | None, message: str) -> None:
        """Record one problem."""
        line = self._lines.get((section, key)) or self._lines.get((section, None))
        loc = f"{self.where}:{line}" if line else self.where
        label = f"[{section}] {key}" if key else f"[{section}]"
        self.items.append(f"{loc}: {label} {message}" if key else f"{loc}: {label}: {message}")

    def raise_if_any(self) -> None:
        """Raise a ConfigError carrying every problem, the first as its message."""
        if self.items:
            extra = len(self.items) - 1
            more = f" (and {extra} more: run 'dynasync config check')" if extra else ""
            raise ConfigError(self.items[0] + more, problems=self.items)


def _index_lines(text: str) -> dict[tuple[str, str | None], int]:
    """(section, key) -> line number; [[tables]] entries are "tables N"."""
    index: dict[tuple[str, str | None], int] = {}
    section, entries = "", 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", line) or re.match(r"^\[\s*([^\]]+?)\s*\]", line)
        if m:
            section = m.group(1)
            if line.startswith("[["):
                entries += 1
                section = f"{section} {entries}"
            index.setdefault((section, None), n)
            continue
        k = re.match(r"^([A-Za-z0-9_\-]+)\s*=", line)
        if k:
            index.setdefault((section, k.group(1)), n)
    return index
