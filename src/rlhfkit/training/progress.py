"""A rich progress bar per stage: steps, running loss, the last evaluation, time left.

A step that takes long (one PPO iteration, a task's sampling) shows a second, transient bar under
the stage's: `with bar.phase("update", total) as tick:` — moving per unit of work when `total` is
known, pulsing while a single long call runs when it is not. Falls back to nothing when disabled
(tests, non-interactive logs keep metrics.jsonl; only the main process of a data-parallel run shows bars).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class StageProgress:
    """`with StageProgress("sft", total) as p: p.advance(loss=...)`."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self.enabled = enabled
        self.description = description
        self.total = total
        self._progress: Progress | None = None
        self._task = None
        self._note = ""

    def __enter__(self) -> "StageProgress":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, status="")
        return self

    def advance(self, n: int = 1, **values: float) -> None:
        if self._progress is None:
            return
        status = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        if self._note:
            status = f"{status}  | {self._note}"
        self._progress.update(self._task, advance=n, status=status)

    def note(self, text: str) -> None:
        self._note = text

    @contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator[Callable[[], None]]:
        """A bar for one part of the current step, removed when the block ends; yields `tick()` (one unit done)."""
        if self._progress is None:
            yield lambda: None
            return
        progress = self._progress
        task = progress.add_task(f"  {description}", total=total, status="")
        try:
            yield lambda: progress.update(task, advance=1)
        finally:
            progress.remove_task(task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
