"""Training diagnostics: a rule-based health monitor for PPO and early stopping on a metric."""

# rlhfkit.config's PPO section embeds this package's sections: load config first, so that importing
# a diagnostics module on its own does not meet a half-initialised module in the cycle.
import rlhfkit.config  # noqa: F401  isort: skip

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
