"""Training-health rules for PPO: read each iteration's metrics, warn once per episode of trouble.

`TrainingMonitor(cfg).observe(step, stats)` takes the dict PPO writes to `ppo/metrics.jsonl`
(names in docs/ppo.md) and returns `Diagnostic`s. A metric that is absent only switches off the
rules that need it. "sec. N" refers to section N of the project's literature notes
(rlhf-literature.md: 4 Gao et al. 2022, 5 Secrets of RLHF / PPO-max, 6 reward-model ensembles).

Each rule warns once when its condition becomes true, stays silent while it stays true, and is
re-armed after the condition has been false for `rearm_after` consecutive iterations (an
iteration where the rule cannot be evaluated counts neither way).

Rules and why they point at that failure:

- `reward_hacking` - the proxy score (`objective/scores`) rises over the last `window` iterations
  while another signal degrades. A high or rising proxy alone is *not* hacking: that is what PPO
  is for. Over-optimisation is proxy and true objective coming apart: the gold score peaks, then
  falls as KL grows (Gao et al. 2022, sec. 4). Evidence, strongest first: `gold/score` falling;
  ensemble disagreement up by more than `hack_disagreement_factor` (members agree in
  distribution and diverge under policy shift, sec. 6); response length up by more than
  `hack_length_factor` (the hack all members share, sec. 6; "pattern collapse" is KL and length
  up, sec. 5); KL up by more than `hack_kl_factor` to above `hack_min_kl` nats (the weakest sign:
  KL grows in every run). Where a gold judge exists and its score is *rising* over the window,
  the weaker signals are not evidence: they only stand in for the judge a real run lacks (KL
  and length grow while PPO genuinely improves the policy). Trends are least-squares fits over the window; proxy rise and gold drop
  must beat `hack_min_proxy_rise`/`hack_min_gold_drop` and have |t| > `hack_min_t`, so one noisy
  batch decides nothing. Action `raise_kl_coef`: a KL penalty acts like early stopping (sec. 4).
- `kl_blowup` - `objective/kl` above `kl_blowup`, or more than `kl_jump_factor` times its
  trailing mean and `kl_jump_min` nats above it: the policy is running away from the reference,
  where the RM is no longer trustworthy (sec. 4-5). Action `raise_kl_coef`.
- `reward_collapse` - `objective/scores_std` below `min_score_std`: every response gets the same
  score, so advantages carry no signal (constant reward function, clip too tight, or mode
  collapse; sec. 5 on reward normalisation and clipping).
- `entropy_collapse` - `policy/entropy_avg` (nats per token) below `min_entropy`: the policy has
  become near-deterministic, the mode collapse that KL and entropy constraints guard against
  (sec. 5, policy constraints).
- `value_loss_explosion` - `loss/value_avg` above `value_loss_factor` times its trailing median
  (at least 3 earlier points): the critic diverges and its advantages become noise (sec. 5: value
  clipping, reward normalisation, critic initialised from the RM). Action `lower_lr`.
- `high_clipfrac` - `policy/clipfrac_avg` above `max_clipfrac`: updates routinely leave the trust
  region, so steps are too large for PPO's clipping to be a safeguard. Action `lower_lr`.
- `ratio_outlier` - `val/ratio_max` above `max_ratio`: some token's probability moved by orders
  of magnitude within one update (too high an LR, or a logprob mismatch such as dropout on).
- `missing_eos` - `rollout/eos_fraction` below `min_eos_fraction`: most responses are truncated,
  so the RM scores text unlike its training data (N+ detail 15, sec. 1).
- `non_finite` - NaN/Inf in any metric above: the run is broken. Action `stop`.

Each warning carries a suggestion that reads the run's config when the monitor has it
(diagnostics/suggestions.py): it names the values the run has instead of advising a setting it
already made.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rlhfkit.config.diagnostics import DiagnosticsSection
from rlhfkit.config.stages import RunConfig
from rlhfkit.diagnostics.suggestions import SUGGESTIONS, suggestion
from rlhfkit.metric_names import M

KL, SCORES, SCORES_STD = M.KL, M.SCORES, M.SCORES_STD
ENTROPY, VALUE_LOSS, CLIPFRAC = M.ENTROPY_TOKEN, M.VALUE_LOSS, M.CLIPFRAC
RATIO_MAX, EOS, LENGTH = M.RATIO_MAX, M.EOS_FRACTION, M.RESPONSE_LENGTH
DISAGREEMENT, GOLD = M.ENSEMBLE_DISAGREEMENT, M.GOLD_SCORE
KEY_METRICS = (KL, SCORES, SCORES_STD, ENTROPY, VALUE_LOSS, CLIPFRAC, RATIO_MAX, EOS, LENGTH, DISAGREEMENT, GOLD)
ACTIONS = (None, "raise_kl_coef", "lower_lr", "stop")
THRESHOLDS = (  # rule, metric, DiagnosticsSection field, fires when below (else above), what, why
    ("reward_collapse", SCORES_STD, "min_score_std", True, "score std", "every response scores alike"),
    ("entropy_collapse", ENTROPY, "min_entropy", True, "per-token entropy", "the policy is near-deterministic"),
    ("high_clipfrac", CLIPFRAC, "max_clipfrac", False, "policy clip fraction", "updates are too large"),
    ("ratio_outlier", RATIO_MAX, "max_ratio", False, "max policy ratio", "a probability moved too far in one update"),
    ("missing_eos", EOS, "min_eos_fraction", True, "EOS fraction", "most responses hit max_new_tokens"),
)
RULES = ("non_finite", "reward_hacking", "kl_blowup", "value_loss_explosion") + tuple(t[0] for t in THRESHOLDS)

ACTION_OF = {"non_finite": "stop", "reward_hacking": "raise_kl_coef", "kl_blowup": "raise_kl_coef",
             "value_loss_explosion": "lower_lr", "high_clipfrac": "lower_lr"}


@dataclass(frozen=True)
class Diagnostic:
    """One warning: which rule, at which iteration, what was seen, what to do."""

    rule: str
    step: int
    message: str
    suggestion: str
    action: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {ACTIONS}")

    def as_metrics(self) -> dict[str, Any]:
        """A flat dict for a metrics.jsonl line."""
        return {"step": self.step, "diagnostic": str(self), "diagnostic/rule": self.rule,
                "diagnostic/message": self.message, "diagnostic/suggestion": self.suggestion,
                "diagnostic/action": self.action}

    def __str__(self) -> str:
        action = f" (action: {self.action})" if self.action else ""
        return " ".join(f"[{self.rule}] step {self.step}: {self.message} Suggestion: {self.suggestion}{action}".split())


@dataclass(frozen=True)
class Adjustment:
    """What the PPO loop should do after one iteration's diagnostics (when auto_actions is on)."""

    kl_coef_factor: float = 1.0
    lr_factor: float = 1.0
    stop: bool = False


def plan_actions(diagnostics: Iterable[Diagnostic], cfg: DiagnosticsSection) -> Adjustment:
    """Combine the actions of one iteration; each kind is applied at most once."""
    actions = {d.action for d in diagnostics}
    return Adjustment(kl_coef_factor=cfg.kl_raise_factor if "raise_kl_coef" in actions else 1.0,
                      lr_factor=cfg.lr_lower_factor if "lower_lr" in actions else 1.0,
                      stop="stop" in actions)


def render(diagnostics: Iterable[Diagnostic]) -> str:
    """Console text: one line per diagnostic, rule in brackets."""
    return "\n".join(str(d) for d in diagnostics)


def _number(value: Any) -> float | None:
    """float(value), or None when it is not a number at all (None, text, lists)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except Exception:  # noqa: BLE001 - odd values (multi-element tensors, huge ints) must never raise here
        return None


def _fit(ys: list[float]) -> tuple[float, float, float, float]:
    """Least-squares line through (i, ys[i]): slope, fitted first and last values, t-statistic of the slope."""
    n = len(ys)
    x_mean, y_mean = (n - 1) / 2, sum(ys) / n
    sxx = sum((i - x_mean) ** 2 for i in range(n))
    slope = sum((i - x_mean) * (y - y_mean) for i, y in enumerate(ys)) / sxx
    residual = sum((y - y_mean - slope * (i - x_mean)) ** 2 for i, y in enumerate(ys)) / (n - 2)
    se = math.sqrt(residual / sxx)
    t = slope / se if se > 1e-12 * (1 + abs(y_mean)) else math.copysign(math.inf, slope) if slope else 0.0
    return slope, y_mean - slope * x_mean, y_mean + slope * x_mean, t


def _f(x: float) -> str:
    return f"{x:.3g}"


class TrainingMonitor:
    """Feed it every iteration's metrics; it returns the diagnostics that newly fire."""

    def __init__(self, cfg: DiagnosticsSection | None = None, run: RunConfig | None = None) -> None:
        """`run`: the run's config, which the suggestions read (diagnostics/suggestions.py); None: general advice."""
        self.cfg = cfg or DiagnosticsSection()
        self.run = run
        self._history: dict[str, deque[float]] = {k: deque(maxlen=self.cfg.window) for k in KEY_METRICS}
        self._armed = {rule: True for rule in RULES}
        self._quiet = {rule: 0 for rule in RULES}

    def observe(self, step: int, stats: Mapping[str, Any]) -> list[Diagnostic]:
        c = self.cfg
        if not c.enabled:
            return []
        values, bad = {}, []
        for key in KEY_METRICS:
            x = _number(stats.get(key)) if key in stats else None
            if x is not None and math.isfinite(x):
                values[key] = x
            elif x is not None:
                bad.append(key)
        checks = {
            "non_finite": f"non-finite {', '.join(f'{k}={stats[k]}' for k in bad)}." if bad else False,
            "reward_hacking": self._hacking(values),
            "kl_blowup": self._kl(values),
            "value_loss_explosion": self._value(values),
        }
        for rule, key, field, below, what, why in THRESHOLDS:
            if key in values:
                x, limit = values[key], getattr(c, field)
                checks[rule] = (x < limit if below else x > limit) and \
                    f"{what} {_f(x)} {'<' if below else '>'} {_f(limit)} ({key}): {why}."
            else:
                checks[rule] = None
        out = [Diagnostic(rule, step, message, suggestion(rule, self.run), ACTION_OF.get(rule))
               for rule, message in checks.items() if self._gate(rule, message)]
        for key, x in values.items():
            self._history[key].append(x)
        return out

    def _gate(self, rule: str, condition: str | bool | None) -> bool:
        """Once per episode: fire on a false->true edge, re-arm after `rearm_after` false iterations."""
        if condition is None:  # not evaluable this iteration
            return False
        if condition:
            self._quiet[rule] = 0
            fire, self._armed[rule] = self._armed[rule], False
            return fire
        self._quiet[rule] += 1
        if self._quiet[rule] >= self.cfg.rearm_after:
            self._armed[rule] = True
        return False

    def _series(self, values: Mapping[str, float], key: str) -> list[float] | None:
        """The last `window` values of `key`, this iteration's included; None if fewer."""
        if key not in values or len(self._history[key]) < self.cfg.window - 1:
            return None
        return list(self._history[key])[1 - self.cfg.window:] + [values[key]]

    def _hacking(self, values: Mapping[str, float]) -> str | bool | None:
        c, proxy = self.cfg, self._series(values, SCORES)
        if proxy is None:
            return None
        _, start, end, t = _fit(proxy)
        if not (t > c.hack_min_t and end - start > c.hack_min_proxy_rise):
            return False
        evidence = []
        gold = self._series(values, GOLD)
        if gold is not None:
            _, g_start, g_end, g_t = _fit(gold)
            if g_t < -c.hack_min_t and g_start - g_end > c.hack_min_gold_drop:
                evidence.append(f"the gold score fell {_f(g_start)} -> {_f(g_end)} (the strongest evidence: proxy and "
                                "true objective have come apart)")
            elif g_end - g_start > c.hack_min_gold_drop:
                return False  # the judge the other signals stand in for says the policy is improving
        for key, factor, floor, what in ((DISAGREEMENT, c.hack_disagreement_factor, 0.0, "ensemble disagreement"),
                                         (LENGTH, c.hack_length_factor, 0.0, "response length"),
                                         (KL, c.hack_kl_factor, c.hack_min_kl, "KL")):
            series = self._series(values, key)
            if series is None:
                continue
            _, s, e, _ = _fit(series)
            if e > factor * max(s, 0.0) and e > floor and (s > 0 or floor > 0):
                evidence.append(f"{what} rose {_f(s)} -> {_f(e)} (more than x{_f(factor)})")
        if not evidence:
            return False
        return (f"proxy score rose {_f(start)} -> {_f(end)} over {len(proxy)} iterations while "
                + "; ".join(evidence) + ".")

    def _kl(self, values: Mapping[str, float]) -> str | bool | None:
        if KL not in values:
            return None
        kl, c = values[KL], self.cfg
        if kl > c.kl_blowup:
            return f"KL {_f(kl)} nats ({KL}) > kl_blowup {_f(c.kl_blowup)}: the policy is running away."
        if len(self._history[KL]) < 2:
            return False
        mean = statistics.fmean(self._history[KL])
        if kl > c.kl_jump_factor * max(mean, 0.0) and kl - mean > c.kl_jump_min:
            return (f"KL ({KL}) jumped to {_f(kl)} nats from a trailing mean of {_f(mean)} "
                    f"(more than x{_f(c.kl_jump_factor)}).")
        return False

    def _value(self, values: Mapping[str, float]) -> str | bool | None:
        if VALUE_LOSS not in values or len(self._history[VALUE_LOSS]) < 3:
            return None
        loss, median = values[VALUE_LOSS], statistics.median(self._history[VALUE_LOSS])
        return (median > 0 and loss > self.cfg.value_loss_factor * median
                and f"value loss {_f(loss)} ({VALUE_LOSS}) > {_f(self.cfg.value_loss_factor)} x its trailing "
                    f"median {_f(median)}: the critic is diverging.")

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self._history.items()}, "armed": dict(self._armed),
                "quiet": dict(self._quiet)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, xs in state.get("history", {}).items():
            if key in self._history:
                self._history[key].clear()
                self._history[key].extend(float(x) for x in xs)
        self._armed.update({k: bool(v) for k, v in state.get("armed", {}).items() if k in self._armed})
        self._quiet.update({k: int(v) for k, v in state.get("quiet", {}).items() if k in self._quiet})


__all__ = ["ACTIONS", "KEY_METRICS", "RULES", "SUGGESTIONS", "Adjustment", "Diagnostic", "DiagnosticsSection",
           "TrainingMonitor", "plan_actions", "render"]
