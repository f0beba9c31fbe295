"""Resume helpers: RNG states as JSON, DataLoader position replay, finished-stage markers, stale
temporary directories, config fingerprints; the config section."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.stages.common import StageOutput
from rlhfkit.training.resume import (
    DataPosition,
    check_fingerprint,
    clean_stale,
    fingerprint,
    finished_output,
    finished_stage,
    mark_finished,
    rng_state,
    set_rng_state,
)


def _draws(g: torch.Generator):
    return random.random(), float(np.random.randn()), torch.rand(3).tolist(), torch.rand(2, generator=g).tolist()


def test_rng_state_round_trips_through_json():
    g = torch.Generator().manual_seed(7)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leave a cached Gaussian in NumPy's state
    state = json.loads(json.dumps(rng_state({"g": g})))
    expected = _draws(g)
    random.seed(9), np.random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    set_rng_state(state, {"g": g})
    assert _draws(g) == expected


def _epoch_batches(position: DataPosition, loader, n: int | None = None) -> list[list[int]]:
    out = []
    for batch in position.batches(loader):
        out.append(batch.tolist())
        if n is not None and len(out) == n:
            break
    return out


@pytest.mark.parametrize("stop_after", [1, 3, 5])
def test_data_position_replays_the_epoch_and_skips_what_was_seen(stop_after):
    def make():
        g = torch.Generator().manual_seed(0)
        return DataPosition(g), DataLoader(list(range(10)), batch_size=2, shuffle=True, generator=g)

    position, loader = make()
    full = _epoch_batches(position, loader) + _epoch_batches(position, loader)

    position, loader = make()
    _epoch_batches(position, loader)
    seen = _epoch_batches(position, loader, stop_after)
    state = json.loads(json.dumps(position.state_dict()))

    resumed, loader2 = make()
    resumed.load_state_dict(state)
    rest = _epoch_batches(resumed, loader2)
    assert full[5:] == seen + rest
    assert resumed.epoch == 2 and _epoch_batches(resumed, loader2)  # and it goes on into the next epoch


def test_finished_marker(tmp_path):
    stage = tmp_path / "sft"
    (stage / "model").mkdir(parents=True)
    assert finished_output(stage) is None and finished_stage(stage, resume=True) is None
    mark_finished(stage, StageOutput(checkpoint=stage / "model", metrics={"eval/loss": 1.5}))
    assert finished_output(stage) == StageOutput(checkpoint=stage / "model", metrics={"eval/loss": 1.5})
    assert finished_stage(stage, resume=False) is None  # only when resuming
    (stage / "model").rename(stage / "gone")
    assert finished_output(stage) is None  # a marker without its model does not count


def test_clean_stale_removes_tmp_and_restores_an_orphaned_old_copy(tmp_path):
    (tmp_path / "policy.tmp-123").mkdir()
    (tmp_path / "best_policy.old-77").mkdir()  # killed between the two renames: the only copy
    (tmp_path / "value_model").mkdir()
    (tmp_path / "value_model.old-77").mkdir()  # the new copy is in place: the old one is garbage
    (tmp_path / "done.json.tmp-5").write_text("{")
    removed = clean_stale(tmp_path, tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_policy", "value_model"]
    assert len(removed) == 3


def _fp(cfg):
    return fingerprint(cfg, cfg.ppo, Path("runs/x/ppo"))


def test_fingerprint_ignores_logging_and_checkpoint_settings():
    a = load_config(None, ["ppo.logging.log_every=5", "ppo.checkpoint.save_every=3"])
    b = load_config(None, ["ppo.logging.log_every=1", "ppo.checkpoint.keep_last=9"])
    check_fingerprint(_fp(a), _fp(b), "ppo", Path("ckpt"))
    c = load_config(None, ["ppo.kl.kl_coef=0.1"])
    with pytest.raises(ConfigError, match=r"ppo\.kl\.kl_coef=0\.2, the config now says 0\.1"):
        check_fingerprint(_fp(a), _fp(c), "ppo", Path("ckpt"))
    e = load_config(None, [f"ppo.policy.name_or_path={Path.cwd() / 'runs/x/sft/model'}"])
    f = load_config(None, ["ppo.policy.name_or_path=runs/x/../x/sft/model"])  # --resume given another spelling
    check_fingerprint(_fp(e), _fp(f), "ppo", Path("ckpt"))
    d = load_config(None, ["seed=1"])
    with pytest.raises(ConfigError, match=r"seed=42"):
        check_fingerprint(_fp(a), _fp(d), "ppo", Path("ckpt"))


def test_checkpoint_section_defaults_and_validation():
    cfg = load_config(None)
    assert (cfg.sft.checkpoint.save_every, cfg.rm.checkpoint.save_every, cfg.ppo.checkpoint.save_every) == (500, 500, 10)
    assert cfg.ppo.checkpoint.keep_last == 2 and cfg.ppo.checkpoint.max_consecutive_faults == 3
    assert load_config(None, ["sft.checkpoint.save_every=null"]).sft.checkpoint.save_every is None
    with pytest.raises(ConfigError, match="ppo.checkpoint.keep_last"):
        load_config(None, ["ppo.checkpoint.keep_last=0"])
    with pytest.raises(ConfigError, match="ppo.save_every: unknown key"):
        load_config(None, ["ppo.save_every=5"])  # folded into ppo.checkpoint
