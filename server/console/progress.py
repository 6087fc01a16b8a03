"""Progress bars for long work (rich), as a callback the trainer calls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from server.training import Reporter


@contextmanager
def progress_reporter(console: Console) -> Iterator[Reporter]:
    """A reporter that shows one bar per description (e.g. per epoch)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def report(description: str, done: int, total: int) -> None:
        if description not in tasks:
            for t in tasks.values():
                progress.remove_task(t)  # type: ignore[arg-type]
            tasks.clear()
            tasks[description] = progress.add_task(description, total=total)
        progress.update(tasks[description], completed=done)  # type: ignore[arg-type]

    with progress:
        yield report
