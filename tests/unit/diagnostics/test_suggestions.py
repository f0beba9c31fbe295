"""The monitor's suggestions read the run's config (diagnostics/suggestions.py), on hand-built configs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config import load_config, save_resolved
from rlhfkit.config.diagnostics import DiagnosticsSection
from rlhfkit.diagnostics.monitor import RULES, SUGGESTIONS, TrainingMonitor
from rlhfkit.diagnostics.suggestions import suggestion


def _cfg(*sets: str):
    return load_config(None, list(sets))


def test_missing_eos_penalty_already_set_is_not_suggested_again():
    unset = suggestion("missing_eos", _cfg("ppo.generation.max_new_tokens=24"))
    assert "set ppo.reward.missing_eos_penalty" in unset and "(now 24)" in unset
    given = suggestion("missing_eos", _cfg("ppo.reward.missing_eos_penalty=1.0", "ppo.generation.max_new_tokens=24"))
    assert given == ("ppo.reward.missing_eos_penalty is already 1: raise it, or raise ppo.generation.max_new_tokens "
                     "(now 24).")


def test_the_kl_remedy_is_the_knob_the_run_has():
    adaptive = suggestion("kl_blowup", _cfg("ppo.kl.adaptive=true", "ppo.kl.target=4.0"))
    assert "lower ppo.kl.target (now 4 nats" in adaptive and "kl_coef" not in adaptive
    fixed = suggestion("kl_blowup", _cfg("ppo.kl.adaptive=false", "ppo.kl.kl_coef=0.05"))
    assert "raise ppo.kl.kl_coef (now 0.05, fixed)" in fixed and "target (" not in fixed
    assert "ppo.kl.kl_coef is 0" in suggestion("entropy_collapse", _cfg("ppo.kl.adaptive=false", "ppo.kl.kl_coef=0"))
    assert "set ppo.target_kl" in fixed
    assert "lower ppo.target_kl (now 0.2)" in suggestion("kl_blowup", _cfg("ppo.target_kl=0.2"))


def test_reward_hacking_advice_follows_the_reward_setup():
    single = suggestion("reward_hacking", _cfg())
    assert "train a reward-model ensemble" in single and "ppo.reward_refresh.every)" in single
    mean = suggestion("reward_hacking", _cfg("ppo.reward.model_paths=[a, b, c]", "ppo.reward_refresh.every=5"))
    assert "combine the 3 reward models with ppo.reward.ensemble: min or uncertainty (now mean)" in mean
    assert "more often (ppo.reward_refresh.every is 5)" in mean
    minimum = suggestion("reward_hacking", _cfg("ppo.reward.model_paths=[a, b]", "ppo.reward.ensemble=min"))
    assert "reward-model ensemble" not in minimum and "min or uncertainty" not in minimum  # min: already the cautious choice
    watched = suggestion("reward_hacking", _cfg("ppo.early_stopping.metric=gold/score", "ppo.early_stopping.patience=4"))
    assert "already watches gold/score" in watched and "(now 4)" in watched
    assert "refresh" not in suggestion("reward_hacking", _cfg("ppo.reward.callable=m:f"))  # a callable is not retrained


def test_switches_already_on_are_not_suggested():
    assert "set ppo.entropy_coef > 0" in suggestion("entropy_collapse", _cfg())
    assert "raise ppo.entropy_coef (now 0.01)" in suggestion("entropy_collapse", _cfg("ppo.entropy_coef=0.01"))
    off = suggestion("value_loss_explosion", _cfg("ppo.clip_range_value=null", "ppo.reward.normalize=false"))
    assert "turn value clipping on" in off and "turn ppo.reward.normalize on" in off
    on = suggestion("value_loss_explosion", _cfg("ppo.value_learning_rate=1e-5", "ppo.reward.clip=3.0"))
    assert "tighten value clipping (ppo.clip_range_value is 0.2)" in on and "normalize" not in on
    assert "lower ppo.value_learning_rate (now 1e-05)" in on and "lower ppo.reward.clip (now 3)" in on
    assert "ppo.ppo_epochs" not in suggestion("high_clipfrac", _cfg("ppo.ppo_epochs=1", "ppo.gradient_accumulation_steps=1",
                                                                    "ppo.batch_size=4", "ppo.mini_batch_size=4"))
    assert "top_k is 5" in suggestion("ratio_outlier", _cfg("ppo.generation.top_k=5"))
    assert "fp16" in suggestion("non_finite", _cfg("mixed_precision=fp16"))
    assert "fp16" not in suggestion("non_finite", _cfg())


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_has_both_kinds_of_advice(rule):
    assert suggestion(rule) == SUGGESTIONS[rule]
    text = suggestion(rule, _cfg())
    assert text.endswith(".") and text != SUGGESTIONS[rule]


def test_the_monitor_passes_its_config_on():
    stats = {"rollout/eos_fraction": 0.1}
    plain = TrainingMonitor(DiagnosticsSection()).observe(1, stats)
    aware = TrainingMonitor(DiagnosticsSection(), _cfg("ppo.reward.missing_eos_penalty=2.0")).observe(1, stats)
    assert plain[0].suggestion == SUGGESTIONS["missing_eos"]
    assert "missing_eos_penalty is already 2" in aware[0].suggestion


def test_diagnose_reads_the_runs_saved_config(tmp_path):
    run = tmp_path / "run"
    (run / "ppo").mkdir(parents=True)
    rows = [{"step": s, "objective/kl": 0.1, "objective/scores": 0.5, "rollout/eos_fraction": 0.1} for s in (1, 2)]
    (run / "ppo" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_resolved(_cfg("ppo.reward.missing_eos_penalty=2.0"), run / "config.yaml")
    for target in (run, run / "ppo", run / "ppo" / "metrics.jsonl"):  # the run, its stage directory, the file
        result = CliRunner().invoke(app, ["diagnose", str(target)])
        assert result.exit_code == 0, result.output
        assert "missing_eos_penalty is already 2" in " ".join(result.output.split()), target
    (run / "config.yaml").write_text("ppo: {no_such_key: 1}\n")  # another version's config: general advice
    result = CliRunner().invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 0 and "general thresholds and suggestions" in " ".join(result.output.split())
    assert "set ppo.reward.missing_eos_penalty" in " ".join(result.output.split())
