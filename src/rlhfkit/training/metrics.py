"""Metrics as JSON lines (one object per logged step), easy to plot and to `tail -f`.

Names follow `group/name` (e.g. `train/loss`, `eval/accuracy`, `objective/kl`). Each line
also carries `stage`, `step` and `time` (seconds since the writer opened). Lines are flushed
as written, so a crash loses nothing already logged.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them visible as strings
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


class MetricsWriter:
    """Append-only metrics.jsonl, optionally mirrored to trackers (training/trackers.py).

    `report_to`: tracker names (`logging.report_to`); `True` is the old `logging.tensorboard` flag.
    `enabled=False` (every process but the main one in a data-parallel run) writes nothing: one
    metrics stream per run, whatever the number of processes."""

    def __init__(self, path: Path, stage: str, report_to: list[str] | bool = (), enabled: bool = True):
        from rlhfkit.config.load import ConfigError
        from rlhfkit.training.distributed import broadcast
        from rlhfkit.training.trackers import open_trackers

        self.path = Path(path)
        self.stage = stage
        self.enabled = enabled
        self._start = time.monotonic()
        self._handle = None
        self._trackers: list = []
        failed: str | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
            names = ["tensorboard"] if report_to is True else list(report_to or [])
            try:
                self._trackers = open_trackers(names, self.path.parent, stage)
            except ConfigError as err:
                failed = str(err)
        # Every process constructs its writer together: a tracker that fails on the main process must
        # stop the others too, or they would wait for it in the next collective.
        failed = broadcast(failed)
        if failed is not None:
            self.close()
            raise ConfigError(failed)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self._handle is None:
            return
        record = {"stage": self.stage, "step": step, "time": round(time.monotonic() - self._start, 3)}
        record.update({k: _clean(v) for k, v in metrics.items()})
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if self._trackers:
            from rlhfkit.training.trackers import scalars

            numbers = scalars(record)
            for tracker in self._trackers:
                tracker.log(step, numbers)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        for tracker in self._trackers:
            tracker.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line from a crash is ignored)."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
