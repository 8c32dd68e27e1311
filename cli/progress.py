"""A rich progress display fed by the library's report(stage, done, total) callbacks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

Report = Callable[[str, int, "int | None"], None]


@contextmanager
def stage_progress(console: Console) -> Iterator[Report]:
    """One progress row per stage; rows appear as stages start. Quiet when not a terminal."""
    if not console.is_terminal:
        yield lambda stage, done, total: None
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress:
        yield report
