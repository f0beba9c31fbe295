"""EarlyStopper: improvement and patience in both modes, min_delta, NaN/missing ignored, state round trip."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rlhfkit.diagnostics import EarlyStopper, EarlyStoppingSection


def run(stopper: EarlyStopper, values, key: str = "gold/score") -> list[tuple[bool, bool]]:
    return [stopper.update(step, {} if v is None else {key: v}) for step, v in enumerate(values)]


def test_off_by_default():
    stopper = EarlyStopper(EarlyStoppingSection())
    assert not stopper.enabled
    assert run(stopper, [1.0, 0.0, 0.0, 0.0]) == [(False, False)] * 4
    assert stopper.best_value is None and stopper.best_step is None


def test_max_mode_patience_and_min_delta():
    stopper = EarlyStopper(EarlyStoppingSection(metric="gold/score", mode="max", patience=3, min_delta=0.01))
    out = run(stopper, [0.10, 0.20, 0.205, 0.15, 0.30, 0.30, 0.31, 0.305])
    # 0.205 and 0.31 beat the best by less than min_delta: not improvements.
    assert [imp for imp, _ in out] == [True, True, False, False, True, False, False, False]
    assert [stop for _, stop in out] == [False] * 7 + [True]
    assert (stopper.best_value, stopper.best_step) == (0.30, 4)
    # Stays stopped; a later improvement resets the counter.
    assert stopper.update(8, {"gold/score": 0.2}) == (False, True)
    assert stopper.update(9, {"gold/score": 0.5}) == (True, False)


def test_min_mode():
    stopper = EarlyStopper(EarlyStoppingSection(metric="eval/loss", mode="min", patience=2))
    out = run(stopper, [2.0, 1.5, 1.5, 1.6], key="eval/loss")
    assert out == [(True, False), (True, False), (False, False), (False, True)]
    assert (stopper.best_value, stopper.best_step) == (1.5, 1)


def test_nan_missing_and_odd_values_are_ignored():
    stopper = EarlyStopper(EarlyStoppingSection(metric="gold/score", patience=2))
    out = run(stopper, [float("nan"), "nan", None, 0.4, float("inf"), float("-inf"), "x", [1, 2], 0.3, None, 0.2])
    assert [imp for imp, _ in out] == [False, False, False, True] + [False] * 7
    # Only the two finite non-improving values (0.3, 0.2) count towards patience.
    assert [stop for _, stop in out] == [False] * 10 + [True]
    assert (stopper.best_value, stopper.best_step) == (0.4, 3)
    assert stopper.update(11, {"objective/kl": 1.0}) == (False, True)  # metric missing: no change


def test_state_round_trip():
    cfg = EarlyStoppingSection(metric="objective/rlhf_reward", mode="max", patience=3)
    stopper = EarlyStopper(cfg)
    run(stopper, [0.1, 0.5, 0.4, 0.3], key="objective/rlhf_reward")
    resumed = EarlyStopper(cfg)
    resumed.load_state_dict(json.loads(json.dumps(stopper.state_dict())))
    assert (resumed.best_value, resumed.best_step, resumed.bad_iterations) == (0.5, 1, 2)
    assert resumed.update(4, {"objective/rlhf_reward": 0.2}) == stopper.update(4, {"objective/rlhf_reward": 0.2})
    assert resumed.should_stop
    fresh = EarlyStopper(cfg)
    fresh.load_state_dict(EarlyStopper(cfg).state_dict())
    assert fresh.best_value is None and fresh.update(0, {"objective/rlhf_reward": -1.0}) == (True, False)
    with pytest.raises(ValueError):
        EarlyStopper(EarlyStoppingSection(metric="gold/score")).load_state_dict(stopper.state_dict())


def test_section_validation():
    assert EarlyStoppingSection().metric is None
    assert all(field.description for field in EarlyStoppingSection.model_fields.values())
    with pytest.raises(ValidationError):
        EarlyStoppingSection(metric="gold/score", mode="maximum")
    with pytest.raises(ValidationError):
        EarlyStoppingSection(patience=0)
    with pytest.raises(ValidationError):
        EarlyStoppingSection(metrc="gold/score")
