"""Config loading: defaults from the seed, --set overrides, one-line errors with dotted paths."""

from __future__ import annotations

import pytest
import yaml

from rlhfkit.config import ConfigError, load_config, save_resolved
from rlhfkit.config.load import apply_override, default_config_path


def test_defaults_follow_the_seed_recommendations():
    cfg = load_config(None)
    assert (cfg.sft.optim.learning_rate, cfg.sft.optim.epochs, cfg.sft.optim.batch_size, cfg.sft.data.max_length) == (2e-5, 3, 4, 512)
    assert (cfg.rm.optim.learning_rate, cfg.rm.optim.epochs, cfg.rm.optim.batch_size, cfg.rm.data.max_length) == (1e-5, 1, 4, 512)
    ppo = cfg.ppo
    assert (ppo.learning_rate, ppo.batch_size, ppo.mini_batch_size, ppo.gradient_accumulation_steps) == (1.41e-5, 64, 4, 16)
    assert (ppo.ppo_epochs, ppo.max_grad_norm, ppo.kl.kl_coef, ppo.clip_range) == (4, 1.0, 0.2, 0.2)
    assert (ppo.generation.temperature, ppo.generation.max_new_tokens) == (0.7, 128)


def test_set_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n  optim:\n    learning_rate: 1.0e-4\n")
    cfg = load_config(path, ["sft.optim.learning_rate=3e-5", "ppo.kl.adaptive=false", "stages=[sft, rm]"])
    assert cfg.sft.optim.learning_rate == 3e-5
    assert cfg.ppo.kl.adaptive is False
    assert cfg.stages == ["sft", "rm"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("sft.optim.learning_rate=-1", "sft.optim.learning_rate: Input should be greater than 0"),
        ("rm.optim.lr=1", "rm.optim.lr: unknown key"),
        ("ppo.mini_batch_size=5", "ppo: batch_size (64) must be a multiple of mini_batch_size × gradient_accumulation_steps"),
        ("ppo.kl.estimator=k9", "ppo.kl.estimator"),
        ("ppo.generation.top_p=1.5", "ppo.generation.top_p"),
        ("stages=[ppo, sft]", "stages must be distinct and in the order"),
        ("task.num_annotators=4", "task.num_annotators must be odd"),
        ("ppo.reward.callable=nocolon", "module:function"),
    ],
)
def test_bad_values_are_refused_with_their_dotted_path(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_file_problems_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  optim: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_override({}, "sft.optim.learning_rate")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_override({"seed": 1}, "seed.x=2")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["ppo.kl.target=3"])
    save_resolved(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["ppo"]["kl"]["target"] == 3


@pytest.mark.parametrize("name", ["default", "quick", "assistant", "assistant-quick"])
def test_bundled_presets_validate(name):
    cfg = load_config(default_config_path(name))
    assert cfg.task is not None and cfg.stages == ["sft", "rm", "ppo"]


def test_preflight_off_survives_yaml():
    """YAML reads a bare `off` as false; `--set preflight=off` must still mean off."""
    from rlhfkit.config import load_config

    assert load_config(None, ["preflight=off"]).preflight == "off"
    assert load_config(None, ["preflight=warn"]).preflight == "warn"


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"--preset nope: no such bundled preset \(known: assistant, assistant-quick, default, quick\)"):
        default_config_path("nope")


def test_default_preset_caps_the_reward_and_the_documented_experiment_lifts_the_cap():
    """presets/default.yaml and docs/reward-hacking.md: the cap, β and the ensemble keep the default's
    text diverse; the documented --set line restores the over-optimised preset."""
    cfg = load_config(default_config_path("default"))
    assert cfg.ppo.reward.clip == 2.0 and cfg.ppo.kl.kl_coef == 0.05 and not cfg.ppo.kl.adaptive
    assert (cfg.rm.ensemble_size, cfg.ppo.num_iterations) == (2, 80)
    assert cfg.ppo.generation.temperature == cfg.eval.temperature == 1.0
    old = load_config(default_config_path("default"), ["ppo.reward.clip=null", "ppo.kl.kl_coef=0.05",
                                                       "ppo.num_iterations=40", "rm.ensemble_size=1",
                                                       "ppo.generation.temperature=0.7", "eval.temperature=0.7"])
    assert (old.ppo.reward.clip, old.ppo.kl.kl_coef, old.ppo.num_iterations, old.rm.ensemble_size) == (None, 0.05, 40, 1)
    assert old.ppo.generation.temperature == old.eval.temperature == 0.7


def test_dotted_items_names_every_leaf_as_set_takes_it():
    from rlhfkit.config.load import dotted_items

    nested = {"ppo": {"kl": {"kl_coef": 0.1, "adaptive": False}, "lr": 1e-5}, "data": {"columns": {}}, "seed": 1}
    assert dotted_items(nested) == {"ppo.kl.kl_coef": 0.1, "ppo.kl.adaptive": False, "ppo.lr": 1e-5,
                                    "data.columns": {}, "seed": 1}  # an empty section is a value, not nothing
