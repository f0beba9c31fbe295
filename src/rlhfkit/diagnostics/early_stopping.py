"""Early stopping on one logged metric, for PPO runs that can over-optimise.

Gao et al. 2022 (literature notes, sec. 4) find that a KL penalty does not move the gold-vs-KL
frontier and "acts like early stopping": the gold score peaks and then falls while the proxy keeps
rising. When a trustworthy signal is logged (`gold/score` on tasks with a gold judge, or a held-out
score) the cheapest remedy is therefore to stop once it has not improved for `patience`
iterations and keep the best checkpoint. Stopping on `objective/rlhf_reward` (the proxy minus the
KL penalty) is a weaker fallback: it only stops when optimisation stalls, not when it hacks.

Rules: the first finite value is an improvement; later values improve when they beat the best by
more than `min_delta` in the direction of `mode`. Iterations where the metric is missing or not a
finite number change nothing (the monitor's `non_finite` rule reports NaNs). `should_stop` is true
once `patience` iterations with the metric have passed without improvement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rlhfkit.config.diagnostics import EarlyStoppingSection


class EarlyStopper:
    """`update(step, stats) -> (improved, should_stop)`; keeps the best value and the step it came at."""

    def __init__(self, cfg: EarlyStoppingSection | None = None) -> None:
        self.cfg = cfg or EarlyStoppingSection()
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_iterations = 0

    @property
    def enabled(self) -> bool:
        return self.cfg.metric is not None

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.best_value is not None and self.bad_iterations >= self.cfg.patience

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.cfg.mode == "max":
            return value > self.best_value + self.cfg.min_delta
        return value < self.best_value - self.cfg.min_delta

    def update(self, step: int, stats: Mapping[str, Any]) -> tuple[bool, bool]:
        if not self.enabled or self.cfg.metric not in stats:
            return False, self.should_stop
        raw = stats[self.cfg.metric]
        try:
            value = float(raw) if raw is not None and not isinstance(raw, bool) else math.nan
        except Exception:  # noqa: BLE001 - an odd value is treated like a missing one
            value = math.nan
        if not math.isfinite(value):
            return False, self.should_stop
        if self._better(value):
            self.best_value, self.best_step, self.bad_iterations = value, step, 0
            return True, False
        self.bad_iterations += 1
        return False, self.should_stop

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (for trainer_state.json)."""
        return {"metric": self.cfg.metric, "mode": self.cfg.mode, "best_value": self.best_value,
                "best_step": self.best_step, "bad_iterations": self.bad_iterations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric", self.cfg.metric) != self.cfg.metric or state.get("mode", self.cfg.mode) != self.cfg.mode:
            raise ValueError(f"early-stopping state is for {state.get('metric')!r} ({state.get('mode')}), "
                             f"not {self.cfg.metric!r} ({self.cfg.mode}): the best value would be meaningless")
        best = state.get("best_value")
        self.best_value = None if best is None else float(best)
        self.best_step = None if state.get("best_step") is None else int(state["best_step"])
        self.bad_iterations = int(state.get("bad_iterations", 0))


__all__ = ["EarlyStopper", "EarlyStoppingSection"]
