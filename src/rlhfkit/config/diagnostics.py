"""Config sections of the PPO health monitor and of early stopping (the code is in rlhfkit.diagnostics).

Kept with the other config sections so that the config package imports nothing outside it: the
diagnostics package reads these sections, never the other way round.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rlhfkit.config.sections import Section
from rlhfkit.metric_names import M


class DiagnosticsSection(Section):
    """Training-health monitor for PPO: thresholds of the rules in rlhfkit.diagnostics.monitor."""

    enabled: bool = Field(True, description="Check each PPO iteration's metrics and report diagnostics.")
    window: int = Field(5, ge=3, description="Iterations used for trends (slopes, trailing means, medians).")
    rearm_after: int = Field(3, ge=1, description="Iterations a condition must be false before it may warn again.")
    kl_blowup: float = Field(20.0, gt=0, description="objective/kl (nats per response) above this is a KL blow-up.")
    kl_jump_factor: float = Field(3.0, gt=1, description="objective/kl above this × its trailing mean is a KL jump.")
    kl_jump_min: float = Field(2.0, ge=0, description="A KL jump must also exceed the trailing mean by this many nats.")
    min_score_std: float = Field(1e-3, ge=0, description="objective/scores_std below this is reward collapse.")
    min_entropy: float = Field(0.05, ge=0, description="policy/entropy_avg (nats/token) below this: entropy collapse.")
    value_loss_factor: float = Field(10.0, gt=1, description="loss/value_avg above this × trailing median: exploding.")
    max_clipfrac: float = Field(0.3, gt=0, le=1, description="policy/clipfrac_avg above this: updates too large.")
    max_ratio: float = Field(10.0, gt=1, description="val/ratio_max above this is a policy-ratio outlier.")
    min_eos_fraction: float = Field(0.5, ge=0, le=1, description="rollout/eos_fraction below this: truncation.")
    hack_min_proxy_rise: float = Field(
        0.1, ge=0, description="Reward hacking needs objective/scores' fitted rise over the window above this.")
    hack_min_gold_drop: float = Field(
        0.05, ge=0, description="gold/score's fitted drop over the window above this counts as falling.")
    hack_disagreement_factor: float = Field(
        1.5, gt=1, description="Hacking evidence: ensemble disagreement grew by more than this factor over the window.")
    hack_length_factor: float = Field(
        1.3, gt=1, description="Hacking evidence: response length grew by more than this factor over the window.")
    hack_kl_factor: float = Field(
        2.0, gt=1, description="Hacking evidence: KL grew by more than this factor over the window (to above "
        "hack_min_kl). KL always grows during RLHF: raise this with a longer window.")
    hack_min_t: float = Field(
        2.0, ge=0, description="Proxy rise and gold drop must also be significant: |slope t-statistic| above this.")
    hack_min_kl: float = Field(
        3.0, ge=0, description="KL evidence needs KL above this many nats (KL near 0 grows by large factors).")
    auto_actions: bool = Field(False, description="Let the PPO loop apply the actions (raise β, lower LR, stop).")
    kl_raise_factor: float = Field(1.5, gt=1, description="Action raise_kl_coef multiplies β by this.")
    lr_lower_factor: float = Field(0.5, gt=0, lt=1, description="Action lower_lr multiplies the LRs by this.")


class EarlyStoppingSection(Section):
    """Stop PPO when a metric has stopped improving."""

    metric: str | None = Field(
        None, description="Metric to watch, e.g. gold/score or objective/rlhf_reward; empty: early stopping off.")
    mode: Literal["max", "min"] = Field("max", description="Whether larger (max) or smaller (min) values are better.")
    patience: int = Field(10, ge=1, description="Iterations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="An improvement must beat the best value by more than this.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str | None) -> str | None:
        """A misspelt metric would never improve and silently stop training early: refuse it."""
        known = {value for name, value in vars(M).items() if name.isupper()}
        occasional = ("eval/", "refresh/")  # groups logged by evaluations and RM refreshes, not every iteration
        if metric is not None and metric not in known and not metric.startswith(occasional):
            groups = sorted({name.split("/")[0] for name in known if "/" in name})
            raise ValueError(f"unknown PPO metric {metric!r}; metrics PPO logs are group/name with group in "
                             f"{', '.join(groups)} (e.g. {M.GOLD_SCORE}, {M.RLHF_REWARD}; docs/ppo.md lists them)")
        return metric
