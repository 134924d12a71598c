"""Rich progress bars that stay quiet in tests and when output is not a terminal-friendly log."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
if not console.is_terminal:
    console.width = 160  # logs and CI: do not squeeze tables into 80 columns


def _enabled(enabled: bool) -> bool:
    return enabled and os.environ.get("HYBRIDPOSE_NO_PROGRESS", "") == ""


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; shows a bar with count, elapsed and remaining time."""
    if not _enabled(enabled):
        yield lambda n=1, **_: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            progress.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def log(message: str, soft_wrap: bool = False) -> None:
    """``soft_wrap``: one line however long (a list of file names), not wrapped at the console's width."""
    console.print(message, soft_wrap=soft_wrap)
