"""FaultGuard (NaN/Inf detection, injection, consecutive count) and the SIGINT/SIGTERM handlers."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

from rlhfkit.training.faults import INJECT_ENV, FaultGuard, NumericalFault, parse_injections
from rlhfkit.training.signals import TrainingInterrupted, exit_on_signals, stop_at_safe_points, stop_requested


class Writer:
    def __init__(self):
        self.lines = []

    def log(self, step, metrics):
        self.lines.append({"step": step, **metrics})


def test_parse_injections():
    assert parse_injections("") == {}
    assert parse_injections("loss@3,4; rewards@2") == {"loss": {3, 4}, "rewards": {2}}
    for bad in ("loss", "@3", "loss@x"):
        with pytest.raises(ValueError, match=INJECT_ENV):
            parse_injections(bad)


def test_non_finite_names_the_first_bad_tensor(monkeypatch):
    monkeypatch.delenv(INJECT_ENV, raising=False)
    guard = FaultGuard("ppo", 3)
    ok = torch.ones(3)
    assert guard.non_finite(1, a=ok, b=None, ids=torch.tensor([1, 2])) is None
    assert guard.non_finite(1, a=ok, b=torch.tensor([1.0, math.inf]), c=torch.tensor(math.nan)) == "b"
    assert guard.non_finite(1, c=torch.tensor([0.0, math.nan])) == "c"


def test_injection_is_deterministic(monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "loss@2")
    guard = FaultGuard("sft", 3)
    assert guard.non_finite(1, loss=torch.tensor(0.5)) is None
    assert guard.non_finite(2, loss=torch.tensor(0.5)) == "loss"
    assert guard.non_finite(2, values=torch.tensor(0.5)) is None


def test_consecutive_faults_stop_with_a_diagnostic(monkeypatch):
    monkeypatch.delenv(INJECT_ENV, raising=False)
    guard, writer = FaultGuard("ppo", 3, unit="iteration"), Writer()
    bad = torch.tensor(math.inf)
    for step, fault in ((1, "loss"), (2, None), (3, "values"), (4, "values")):
        if fault:
            assert guard.non_finite(step, **{fault: bad}) == fault
        guard.record(step, fault, writer)
    assert guard.consecutive == 2
    assert [(line["step"], line["fault"], line["tensor"]) for line in writer.lines] == [
        (1, "inf", "loss"), (3, "inf", "values"), (4, "inf", "values")]
    guard.non_finite(5, rewards=torch.tensor(math.nan))
    with pytest.raises(NumericalFault, match=r"3 consecutive .* iteration 5 \(rewards is nan\)"):
        guard.record(5, "rewards", writer)
    restored = FaultGuard("ppo", 3)
    restored.load_state_dict(guard.state_dict())
    assert (restored.consecutive, restored.total) == (3, 4)


def test_first_signal_is_deferred_second_stops_at_once():
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with stop_at_safe_points():
        assert stop_requested() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop_requested() == signal.SIGTERM
        with pytest.raises(TrainingInterrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
        assert info.value.exit_code == 130 and info.value.checkpoint is None
    assert stop_requested() is None
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before


def test_outside_a_loop_signals_stop_at_once():
    with pytest.raises(TrainingInterrupted) as info:
        with exit_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.exit_code == 143
