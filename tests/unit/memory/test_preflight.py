"""The pre-flight's margin: refuse only when even a plan 15 % too high would not fit; warn in between."""

import pytest

from rlhfkit.config import ConfigError, load_config
from rlhfkit.config.load import default_config_path
from rlhfkit.memory.advice import needed
from rlhfkit.memory.devices import DeviceBudget
from rlhfkit.memory.inputs import PlanOverrides, plan_inputs_from_config
from rlhfkit.memory.plan import plan_memory
from rlhfkit.memory.preflight import MARGIN, check


def _need(cfg) -> float:
    return needed(plan_memory(plan_inputs_from_config(cfg, "ppo", PlanOverrides(device="cpu"))), "cpu")


def _budget(capacity: float) -> DeviceBudget:
    return DeviceBudget("cpu", 1, capacity, "available RAM (CPU)")


def test_refuses_beyond_the_margin_and_warns_inside_it(capsys):
    cfg = load_config(default_config_path("default"))
    need = _need(cfg)
    check(cfg, ["ppo"], _budget(need * 1.01))  # fits: one verdict line
    assert ": fits" in capsys.readouterr().err
    check(cfg, ["ppo"], _budget(need * (1 - MARGIN) * 1.01))  # short, but within the planner's accuracy: a warning
    assert "warning" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="largest term"):
        check(cfg, ["ppo"], _budget(need * (1 - MARGIN) * 0.99))


def test_warn_and_off_never_refuse(capsys):
    for mode in ("warn", "off"):
        cfg = load_config(default_config_path("default"), [f"preflight={mode}"])
        check(cfg, ["ppo"], _budget(1e6))  # 1 MB: hopeless
    out = capsys.readouterr().err
    assert out.count("[plan]") == 1 and "warning" in out  # warn printed its verdict and warning; off printed nothing
