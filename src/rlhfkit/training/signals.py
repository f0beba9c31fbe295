"""SIGINT / SIGTERM: finish the current optimiser step or PPO iteration, save, then exit.

Inside `stop_at_safe_points()` (a training loop) the first SIGINT or SIGTERM only sets a flag;
the loop reads it with `stop_requested()` at its next safe point (after an optimiser step or a
PPO iteration), saves a checkpoint and raises `TrainingInterrupted`. A second signal stops at
once: nothing is saved, and the last checkpoint on disk, written atomically, stays valid.
Outside a training loop (model loading, evaluation) `exit_on_signals()`, installed by the CLI,
turns both signals into `TrainingInterrupted` straight away. The CLI exits with 128 + signal
number: 130 for SIGINT, 143 for SIGTERM, as a shell reports a process killed by that signal.

Handlers can only be installed from the main thread; elsewhere these context managers do nothing
and Python's defaults apply.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlhfkit.training.progress import console

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None


class TrainingInterrupted(BaseException):
    """A stage stopped on SIGINT/SIGTERM; `checkpoint` is what it saved (None: stopped at once).

    A BaseException, like KeyboardInterrupt: the second signal can arrive anywhere, including in
    user code run under `except Exception` (a reward callable, an imported module), and must still
    reach the CLI, which exits 130/143."""

    def __init__(self, signum: int, message: str, checkpoint: Path | None = None):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def stop_requested() -> int | None:
    """The signal number received inside `stop_at_safe_points()`, or None."""
    return _requested


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler) -> Iterator[None]:
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stop_now(signum: int, frame: object = None) -> None:
    raise TrainingInterrupted(signum, f"{signal_name(signum)} received: stopped without saving")


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `TrainingInterrupted` immediately (the CLI's outer handler)."""
    with _handlers(_stop_now):
        yield


@contextmanager
def stop_at_safe_points() -> Iterator[None]:
    """Within: the first signal is remembered for the loop's next safe point, a second one stops at once."""
    global _requested

    def handler(signum: int, frame: object) -> None:
        global _requested
        if _requested is not None:
            _stop_now(signum)
        _requested = signum
        console.print(f"[yellow]{signal_name(signum)} received:[/] saving a checkpoint at the end of the current "
                      "step; send it again to stop at once (the last checkpoint stays valid)", highlight=False)

    _requested = None
    try:
        with _handlers(handler):
            yield
    finally:
        _requested = None
