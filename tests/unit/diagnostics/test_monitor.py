"""TrainingMonitor: every rule fires once per episode of trouble on a synthetic run, re-arms after
`rearm_after` clean iterations, and a healthy noisy run (or missing/odd metrics) produces nothing."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from pydantic import ValidationError

from rlhfkit.diagnostics import (
    Diagnostic,
    DiagnosticsSection,
    TrainingMonitor,
    plan_actions,
    render,
)
from rlhfkit.diagnostics.monitor import KEY_METRICS, RULES, SUGGESTIONS

# A flat, healthy iteration: every rule's condition is false.
BASE = {
    "objective/kl": 1.0, "objective/scores": 0.5, "objective/scores_std": 0.8, "policy/entropy_avg": 1.5,
    "loss/value_avg": 0.3, "policy/clipfrac_avg": 0.1, "val/ratio_max": 1.5, "rollout/eos_fraction": 0.9,
    "rollout/response_length": 20.0, "reward/ensemble_disagreement": 0.2, "gold/score": 0.1,
}


def fired(seq, cfg: DiagnosticsSection | None = None) -> list[tuple[int, str]]:
    monitor = TrainingMonitor(cfg or DiagnosticsSection())
    return [(d.step, d.rule) for step, stats in enumerate(seq) for d in monitor.observe(step, stats)]


def pattern(key: str, bad, good, marks: str) -> list[dict]:
    """One stats dict per character: 'B' puts `bad` in `key`, 'G' puts `good`."""
    return [{**BASE, key: bad if m == "B" else good} for m in marks]


THRESHOLD_RULES = [  # rule, metric, bad value, good value, action
    ("reward_collapse", "objective/scores_std", 0.0, 0.8, None),
    ("entropy_collapse", "policy/entropy_avg", 0.01, 1.5, None),
    ("high_clipfrac", "policy/clipfrac_avg", 0.45, 0.1, "lower_lr"),
    ("ratio_outlier", "val/ratio_max", 40.0, 1.5, None),
    ("missing_eos", "rollout/eos_fraction", 0.2, 0.9, None),
    ("kl_blowup", "objective/kl", 35.0, 1.0, "raise_kl_coef"),
    ("value_loss_explosion", "loss/value_avg", 8.0, 0.3, "lower_lr"),
    ("non_finite", "loss/value_avg", float("nan"), 0.3, "stop"),
    ("non_finite", "objective/kl", float("inf"), 1.0, "stop"),
    ("non_finite", "objective/scores", "nan", 0.5, "stop"),  # NaN as metrics.jsonl stores it
]


@pytest.mark.parametrize("rule,key,bad,good,action", THRESHOLD_RULES)
def test_threshold_rule_fires_once_and_rearms(rule, key, bad, good, action):
    # Fires when the condition turns true (3), silent while it persists (4, 5), re-armed by three
    # clean iterations (6-8), fires again (9).
    seq = pattern(key, bad, good, "GGGBBBGGGB")
    assert fired(seq) == [(3, rule), (9, rule)]
    # Only two clean iterations in between: still the same episode, no second warning.
    assert fired(pattern(key, bad, good, "GGGBBGGBB")) == [(3, rule)]
    monitor = TrainingMonitor(DiagnosticsSection())
    for step, stats in enumerate(seq[:3]):
        assert monitor.observe(step, stats) == []
    (diag,) = monitor.observe(3, seq[3])
    assert diag.action == action and diag.suggestion and key in str(diag) + diag.message


def test_rearm_after_is_configurable():
    seq = pattern("policy/entropy_avg", 0.0, 1.5, "GBGBGGGGGB")
    assert fired(seq, DiagnosticsSection(rearm_after=1)) == [(1, "entropy_collapse"), (3, "entropy_collapse"),
                                                             (9, "entropy_collapse")]
    assert fired(seq, DiagnosticsSection(rearm_after=6)) == [(1, "entropy_collapse")]


def test_suggestions_name_config_keys():
    assert set(SUGGESTIONS) == set(RULES)
    text = render(Diagnostic(rule, 0, "m", suggestion) for rule, suggestion in SUGGESTIONS.items())
    for key in ("ppo.kl.kl_coef", "ppo.learning_rate", "ppo.generation.temperature", "ppo.reward.missing_eos_penalty",
                "ppo.value_learning_rate", "ppo.reward.ensemble", "ppo.entropy_coef", "ppo.ppo_epochs"):
        assert key in text


def test_kl_jump_below_the_absolute_threshold():
    seq = [{**BASE, "objective/kl": 1.0 if step < 5 else 4.5} for step in range(12)]
    monitor = TrainingMonitor(DiagnosticsSection())
    diags = [d for step, stats in enumerate(seq) for d in monitor.observe(step, stats)]
    assert [(d.step, d.rule, d.action) for d in diags] == [(5, "kl_blowup", "raise_kl_coef")]
    assert "jumped" in diags[0].message
    # A small absolute move is not a jump even when the ratio is large (early KL near 0).
    assert fired([{**BASE, "objective/kl": kl} for kl in (0.0, 0.05, 0.1, 0.6, 1.4)]) == []


def test_value_loss_needs_three_earlier_points():
    assert fired([{**BASE, "loss/value_avg": v} for v in (0.3, 0.3, 50.0)]) == []
    assert fired([{**BASE, "loss/value_avg": v} for v in (0.3, 0.3, 0.3, 50.0)]) == [(3, "value_loss_explosion")]


def _hacking_run(gold=None, disagreement=None, length=None, kl=None, n=30):
    """Proxy rises 0.1/iteration throughout; each other signal is healthy unless a function of the step is given."""
    seq = []
    for i in range(n):
        stats = {**BASE, "objective/scores": 0.5 + 0.1 * i, "objective/kl": 1.0 + 0.05 * i}
        stats.pop("gold/score")
        for key, f in (("gold/score", gold), ("reward/ensemble_disagreement", disagreement),
                       ("rollout/response_length", length), ("objective/kl", kl)):
            if f is not None:
                stats[key] = f(i)
        seq.append(stats)
    return seq


def test_reward_hacking_gold_falls_while_proxy_rises():
    # Gold tracks the proxy up to iteration 8, then falls 0.04/iteration (Gao et al.'s over-optimisation
    # curve). Window 7-11 is the first whose fitted gold drop (0.10) is significant.
    gold = lambda i: 0.1 + 0.03 * i if i <= 8 else 0.34 - 0.04 * (i - 8)  # noqa: E731
    monitor = TrainingMonitor(DiagnosticsSection())
    diags = [d for step, stats in enumerate(_hacking_run(gold=gold)) for d in monitor.observe(step, stats)]
    assert [(d.step, d.rule, d.action) for d in diags] == [(11, "reward_hacking", "raise_kl_coef")]
    assert "gold score fell" in diags[0].message and "strongest" in diags[0].message
    assert "ppo.reward.ensemble" in diags[0].suggestion


def test_reward_hacking_rearms_after_the_proxy_stops_rising():
    proxy = [0.5 + 0.1 * i for i in range(12)] + [1.6] * 8 + [1.6 + 0.1 * i for i in range(1, 11)]
    gold = [0.1 + 0.03 * i for i in range(6)] + [0.25 - 0.04 * i for i in range(1, 25)]
    seq = [{**BASE, "objective/scores": p, "gold/score": g} for p, g in zip(proxy, gold)]
    # Fires once in the first episode, stays quiet while the proxy is flat (20 iterations of gold
    # falling alone is not hacking), fires again once the proxy climbs while gold keeps falling.
    assert fired(seq) == [(8, "reward_hacking"), (21, "reward_hacking")]


@pytest.mark.parametrize("signal,kwargs,step", [
    ("ensemble disagreement", {"disagreement": lambda i: 0.2 if i < 6 else 0.2 * 1.15 ** (i - 5)}, 8),
    ("response length", {"length": lambda i: 20.0 if i < 6 else 20.0 * 1.08 ** (i - 5)}, 9),
    ("KL", {"kl": lambda i: 1.0 if i < 6 else 1.4 ** (i - 5)}, 9),
])
def test_reward_hacking_from_other_evidence(signal, kwargs, step):
    monitor = TrainingMonitor(DiagnosticsSection())
    diags = [d for s, stats in enumerate(_hacking_run(**kwargs, n=14)) for d in monitor.observe(s, stats)]
    assert [(d.step, d.rule) for d in diags] == [(step, "reward_hacking")]
    assert f"{signal} rose" in diags[0].message


def test_rising_gold_overrules_the_weaker_signals():
    # KL and length climbing fast would be evidence without a judge (the test above); with a gold
    # score rising along with the proxy they are what improving the policy costs, not hacking.
    grow = {"kl": lambda i: 1.0 if i < 6 else 1.4 ** (i - 5), "length": lambda i: 20.0 if i < 6 else 20.0 * 1.08 ** (i - 5)}
    monitor = TrainingMonitor(DiagnosticsSection())
    rising_gold = [d for s, stats in enumerate(_hacking_run(gold=lambda i: 0.1 + 0.03 * i, **grow, n=14))
                   for d in monitor.observe(s, stats)]
    assert [d.rule for d in rising_gold] == []
    monitor = TrainingMonitor(DiagnosticsSection())  # a flat gold score does not overrule them
    flat_gold = [d for s, stats in enumerate(_hacking_run(gold=lambda i: 0.3, **grow, n=14)) for d in monitor.observe(s, stats)]
    assert [d.rule for d in flat_gold] == ["reward_hacking"]


def test_high_or_rising_reward_alone_is_not_hacking():
    # The seed's naive rule ("reward_mean > threshold => hacking") would fire here; the proxy is
    # high and rising but gold rises with it and nothing else degrades.
    seq = [{**BASE, "objective/scores": 2.0 + 0.3 * i, "gold/score": 0.1 + 0.02 * i} for i in range(30)]
    assert fired(seq) == []
    # Gold falling while the proxy is flat is a different problem, not proxy over-optimisation.
    assert fired([{**BASE, "gold/score": 0.5 - 0.05 * i} for i in range(20)]) == []


def healthy_run(seed: int, n: int = 60):
    """Realistic noisy PPO curves: proxy and gold rise together (batch noise correlated, as both score
    the same responses), KL grows slowly towards the adaptive target, entropy drifts down slowly."""
    rng = random.Random(seed)
    for i in range(n):
        z = rng.gauss(0, 1)
        yield {
            "objective/kl": 6.0 * (1 - math.exp(-i / 30)) + abs(rng.gauss(0, 0.1)),
            "objective/scores": 0.4 * math.log1p(i / 3) + 0.05 * z,
            "objective/scores_std": 0.9 - 0.004 * i + rng.gauss(0, 0.03),
            "gold/score": 0.05 + 0.15 * math.log1p(i / 3) + 0.02 * (0.6 * z + 0.8 * rng.gauss(0, 1)),
            "policy/entropy_avg": 1.8 - 0.008 * i + rng.gauss(0, 0.04),
            "loss/value_avg": 0.05 + 0.4 * math.exp(-i / 8) + abs(rng.gauss(0, 0.02)),
            "policy/clipfrac_avg": min(0.25, max(0.0, 0.08 + rng.gauss(0, 0.03))),
            "val/ratio_max": 1.3 + abs(rng.gauss(0, 0.4)),
            "rollout/eos_fraction": min(1.0, 0.9 + rng.gauss(0, 0.03)),
            "rollout/response_length": 21 + 0.03 * i + rng.gauss(0, 0.8),
            "reward/ensemble_disagreement": 0.2 + 0.002 * i + abs(rng.gauss(0, 0.015)),
            "objective/rlhf_reward": 0.3, "timing/generation": 1.2,  # other metrics are ignored
        }


@pytest.mark.parametrize("seed", range(20))
def test_healthy_noisy_run_produces_no_diagnostic(seed):
    monitor = TrainingMonitor(DiagnosticsSection())
    diags = [d for step, stats in enumerate(healthy_run(seed)) for d in monitor.observe(step, stats)]
    assert diags == [], render(diags)


def test_missing_and_odd_values_never_raise():
    monitor = TrainingMonitor(DiagnosticsSection())
    assert monitor.observe(0, {}) == []
    rng = random.Random(0)
    odd = [None, "abc", True, [1.0, 2.0], {"x": 1}, np.array([1.0, 2.0]), 10**400, b"1"]
    for step, stats in enumerate(healthy_run(1, n=80), start=1):
        kept = {k: v for k, v in stats.items() if rng.random() < 0.5}
        kept.update({k: rng.choice(odd) for k in KEY_METRICS if rng.random() < 0.2})
        for d in monitor.observe(step, kept):
            assert d.rule in RULES  # odd non-numbers are treated as missing, not as diagnostics
    # numpy scalars are numbers: a NaN one is a diagnostic.
    assert [d.rule for d in TrainingMonitor().observe(0, {"loss/value_avg": np.float32("nan")})] == ["non_finite"]


def test_odd_values_count_as_missing():
    odd = {k: "n/a" for k in KEY_METRICS}
    assert fired([odd] * 5 + pattern("policy/entropy_avg", 0.0, 1.5, "GB")) == [(6, "entropy_collapse")]


def test_diagnostic_formats_and_actions():
    d = Diagnostic("kl_blowup", 7, "KL 30 nats\n> 20.", "raise ppo.kl.kl_coef.", "raise_kl_coef")
    line = str(d)
    assert line.startswith("[kl_blowup] step 7:") and "\n" not in line and "raise_kl_coef" in line
    metrics = json.loads(json.dumps(d.as_metrics()))
    assert metrics["diagnostic/rule"] == "kl_blowup" and metrics["step"] == 7 and metrics["diagnostic"] == line
    assert render([d, d]).count("\n") == 1 and render([]) == ""
    with pytest.raises(ValueError):
        Diagnostic("x", 0, "m", "s", "reboot")
    cfg = DiagnosticsSection(kl_raise_factor=2.0, lr_lower_factor=0.25)
    lower = Diagnostic("high_clipfrac", 1, "m", "s", "lower_lr")
    plan = plan_actions([d, d, lower, Diagnostic("ratio_outlier", 1, "m", "s")], cfg)
    assert (plan.kl_coef_factor, plan.lr_factor, plan.stop) == (2.0, 0.25, False)
    assert plan_actions([Diagnostic("non_finite", 1, "m", "s", "stop")], cfg).stop
    assert plan_actions([], cfg).kl_coef_factor == 1.0


def test_section_defaults_validation_and_descriptions():
    cfg = DiagnosticsSection()
    assert (cfg.enabled, cfg.window, cfg.kl_blowup, cfg.rearm_after, cfg.auto_actions) == (True, 5, 20.0, 3, False)
    assert all(field.description for field in DiagnosticsSection.model_fields.values())
    with pytest.raises(ValidationError):
        DiagnosticsSection(windw=5)
    with pytest.raises(ValidationError):
        DiagnosticsSection(window=2)
    assert TrainingMonitor(DiagnosticsSection(enabled=False)).observe(0, {"objective/kl": float("nan")}) == []


def test_state_round_trip_keeps_the_episode():
    seq = pattern("policy/clipfrac_avg", 0.5, 0.1, "GGGBBBBGGGB")
    monitor = TrainingMonitor()
    for step, stats in enumerate(seq[:5]):
        monitor.observe(step, stats)
    resumed = TrainingMonitor()
    resumed.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    rest = [(d.step, d.rule) for step, stats in enumerate(seq[5:], start=5) for d in resumed.observe(step, stats)]
    assert rest == [(10, "high_clipfrac")]  # no repeat at 5-6 after the resume
