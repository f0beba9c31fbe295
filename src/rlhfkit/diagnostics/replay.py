"""`rlhfkit diagnose RUN_DIR`: the live monitor's rules over a finished (or running) PPO metrics file.

The same `TrainingMonitor` that watches a run as it trains reads the iterations of an existing
`metrics.jsonl` in order, so a run made before a rule existed, with the monitor off, or by
another framework whose metric names match (TRL's PPO logs `objective/kl`, `objective/scores`,
`policy/clipfrac_avg`, …: docs/ppo.md) gets the same warnings and suggestions after the fact.
Lines without `objective/kl` (events, diagnostics, faults) are not iterations and are skipped.
The run's saved config.yaml, when there is one beside the stage directory, gives the monitor its
thresholds (ppo.diagnostics) and the settings its suggestions read (diagnostics/suggestions.py).
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.config.diagnostics import DiagnosticsSection
from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import RunConfig
from rlhfkit.diagnostics.monitor import Diagnostic, TrainingMonitor
from rlhfkit.metric_names import M
from rlhfkit.training.metrics import read_metrics


def metrics_file(target: Path) -> Path:
    """RUN_DIR/ppo/metrics.jsonl, STAGE_DIR/metrics.jsonl or the file itself."""
    for candidate in (target / "ppo" / "metrics.jsonl", target / "metrics.jsonl", target):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{target}: no PPO metrics.jsonl there (looked for ppo/metrics.jsonl, metrics.jsonl)")


def saved_config(metrics: Path) -> Path | None:
    """The config.yaml of the run that wrote `metrics` (RUN/config.yaml for RUN/ppo/metrics.jsonl), if any."""
    candidates = [metrics.parent / "config.yaml"]
    if metrics.parent.name == "ppo":  # a stage directory inside a run directory
        candidates.append(metrics.parent.parent / "config.yaml")
    return next((c for c in candidates if c.is_file()), None)


def replay(path: Path, cfg: DiagnosticsSection | None = None, run: RunConfig | None = None) -> tuple[int, list[Diagnostic]]:
    """(iterations read, every diagnostic the monitor raises over them); `run` makes the suggestions config-aware."""
    monitor = TrainingMonitor(cfg or DiagnosticsSection(), run)
    iterations = [r for r in read_metrics(path) if isinstance(r, dict) and M.KL in r]
    if not iterations:
        raise ConfigError(f"{path}: no PPO iteration lines (none has {M.KL})")
    found: list[Diagnostic] = []
    for index, record in enumerate(iterations, start=1):
        step = record.get("step", index)
        found += monitor.observe(int(step) if isinstance(step, (int, float)) else index, record)
    return len(iterations), found
