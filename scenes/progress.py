"""One progress helper for every long job (training, fine-tuning, rendering, SfM).

    with progress("train", total=7000, completed=0) as bar:
        for step in ...:
            bar.update(step + 1, "loss 0.031  psnr 24.1")

Bars go to stderr so stdout keeps the tables and JSON; ``enabled=False`` (``--json``) shows nothing.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class Bar:
    """Handle of one bar: ``update(completed, stats)``."""

    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def update(self, completed: int, stats: str = "") -> None:
        self._progress.update(self._task, completed=completed, stats=stats)

    def advance(self, n: int = 1, stats: str | None = None) -> None:
        if stats is None:
            self._progress.advance(self._task, n)
        else:
            self._progress.update(self._task, advance=n, stats=stats)


@contextmanager
def progress(label: str, total: int, *, completed: int = 0, enabled: bool = True,
             transient: bool = False) -> Iterator[Bar]:
    """A rich progress bar on stderr: label, bar, n/total, free text, time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), disable=not enabled, transient=transient)
    with bar:
        task = bar.add_task(label, total=total, completed=completed, stats="")
        yield Bar(bar, task)
