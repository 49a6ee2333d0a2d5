"""Progress bars on stderr for the CLI, drawn by tqdm: count, rate and ETA.

They appear only when stderr is a terminal, so logs under systemd and output
through pipes stay clean. The library reports progress through a plain
callback, (label, done, total or None), and never imports this module.
"""

from __future__ import annotations

import shutil
import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm

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
