"""What every stage returns, and small helpers shared by the stage files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageOutput:
    """What a stage leaves behind for the next one and for the summary."""

    checkpoint: Path
    metrics: dict[str, float]
