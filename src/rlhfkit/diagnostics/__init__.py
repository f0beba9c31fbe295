"""Training diagnostics: a rule-based health monitor for PPO and early stopping on a metric."""

from rlhfkit.diagnostics.early_stopping import EarlyStopper, EarlyStoppingSection
from rlhfkit.diagnostics.monitor import (
    Adjustment,
    Diagnostic,
    DiagnosticsSection,
    TrainingMonitor,
    plan_actions,
    render,
)

__all__ = [
    "Adjustment", "Diagnostic", "DiagnosticsSection", "EarlyStopper", "EarlyStoppingSection",
    "TrainingMonitor", "plan_actions", "render",
]
