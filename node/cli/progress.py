"""Progress for commands that wait on many answers: a Rich progress bar on standard error,
and only when standard error is a terminal (a pipe, a log file or a test sees nothing of
it, and standard output carries only results)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


class Progress(Protocol):
    def advance(self, message: str = "") -> None:
        """One more done; `message` (e.g. a peer's outcome) is shown above the bar."""


class _Silent:
    def advance(self, message: str = "") -> None:
        pass


class _Bar:
    def __init__(self, progress: RichProgress, task: TaskID, echo: bool) -> None:
        self._progress = progress
        self._task = task
        self._echo = echo

    def advance(self, message: str = "") -> None:
        self._progress.advance(self._task)
        if message and self._echo:
            self._progress.console.print(message, highlight=False, markup=False)


@contextmanager
def progress_for(description: str, total: int, echo: bool = True) -> Iterator[Progress]:
    """A bar toward `total` on a terminal's standard error (nothing elsewhere); with `echo`,
    each `advance` message is printed above it as it comes."""
    if not sys.stderr.isatty():
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Bar(progress, progress.add_task(description, total=total), echo)
