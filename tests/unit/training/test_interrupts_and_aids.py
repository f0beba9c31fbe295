"""A second signal is never mistaken for a user error; test aids with a bad spec are one line;
module:function specs are found in the working directory."""

from __future__ import annotations

import signal
import sys

import pytest

from rlhfkit.config.load import ConfigError
from rlhfkit.rewards.sources import CallableReward, import_function
from rlhfkit.training.faults import parse_injections
from rlhfkit.training.signals import TrainingInterrupted


def _interrupted(prompts, responses):
    raise TrainingInterrupted(signal.SIGINT, "SIGINT received: stopped without saving")


def test_a_stop_inside_a_reward_callable_is_not_a_reward_error(monkeypatch):
    reward = CallableReward.__new__(CallableReward)
    reward.spec, reward.fn = "m:f", _interrupted
    with pytest.raises(TrainingInterrupted):
        reward.score(["p"], ["r"])
    try:
        _interrupted([], [])
    except Exception:  # noqa: BLE001 - the point: user code's `except Exception` must not swallow it
        pytest.fail("TrainingInterrupted was caught by `except Exception`")
    except TrainingInterrupted:
        pass


def test_a_stop_while_importing_a_user_module_passes_through(tmp_path, monkeypatch):
    (tmp_path / "slow_import_xyz.py").write_text(
        "import signal\nfrom rlhfkit.training.signals import TrainingInterrupted\n"
        "raise TrainingInterrupted(signal.SIGTERM, 'SIGTERM received')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TrainingInterrupted):
        import_function("slow_import_xyz:f", "ppo.reward.callable")


def test_the_working_directory_is_searched_for_module_function_specs(tmp_path, monkeypatch):
    (tmp_path / "my_cwd_reward_xyz.py").write_text("def score(prompts, responses):\n    return [1.0] * len(prompts)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    fn = import_function("my_cwd_reward_xyz:score", "ppo.reward.callable")
    assert fn(["a"], ["b"]) == [1.0]
    assert sys.path[-1] == str(tmp_path)  # appended: it cannot shadow an installed package
    with pytest.raises(ConfigError, match=r"searched the working directory"):
        import_function("no_such_module_abc:f", "ppo.reward.callable")


@pytest.mark.parametrize("spec", ["loss", "loss@", "loss@x", "loss@0", "los@3", "@3", "loss@3;;values@-1"])
def test_a_bad_nan_injection_spec_is_a_config_error(spec):
    with pytest.raises(ConfigError, match=r"RLHFKIT_INJECT_NAN="):
        parse_injections(spec)
    assert parse_injections("loss@3,4; rewards@2;") == {"loss": {3, 4}, "rewards": {2}}
