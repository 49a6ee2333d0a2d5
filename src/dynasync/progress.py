"""Progress: the callback the library reports through, and the bars on
stderr the CLI draws with tqdm (count, rate and ETA).

Bars appear only when stderr is a terminal, so logs under systemd and output
through pipes stay clean.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

# (label: a table, or "changelog"; done; total, or None when unknown)
Progress = Callable[[str, int, int | None], None]

# "backfill users: [######        ] 500/1000 rows 2,431 rows/s ETA 00:00"
FORMAT = "{desc}: [{bar:30}] {n_fmt}/{total_fmt} {unit} {rate_fmt} ETA {remaining}"
FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit} {rate_fmt}"


class Bars:
    """One bar per label (a table, or "changelog"), fed by the library's progress callback."""

    def __init__(self, verb: str, unit: str = "rows") -> None:
        self.verb = verb
        self.unit = unit
        self.enabled = sys.stderr.isatty()
        self._bars: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int | None = None) -> None:
        """Move the bar of `label` to `done` out of `total`."""
        if not self.enabled:
            return
        bar = self._bars.get(label)
        if bar is None:
            from tqdm import tqdm  # only on a terminal: the library never pays for it

            # A terminal that reports no size (0x0, as a bare pty does) gets 100x24
            # rather than tqdm's own reading, which hides the bar altogether.
            size = shutil.get_terminal_size((100, 24))
            bar = self._bars[label] = tqdm(
                desc=f"{self.verb} {label}",
                total=total,
                unit=self.unit,
                ascii=" #",
                file=sys.stderr,
                ncols=size.columns,
                nrows=size.lines,
                bar_format=FORMAT if total else FORMAT_NO_TOTAL,
            )
        if total is not None and total != bar.total:
            bar.total = total
        bar.update(done - bar.n)

    def __bool__(self) -> bool:
        """False off a terminal, so callers skip the work (counting rows) a bar needs."""
        return self.enabled

    def close(self) -> None:
        """Finish every bar, each on its own line."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> Bars:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
