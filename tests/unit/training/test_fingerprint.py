"""What a checkpoint must be resumed with: every key a stage's result depends on, including the
bundled task's section and the content of each data file it reads; paths inside the run directory
are relative to it, so a moved run directory still resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlhfkit.config.load import ConfigError, load_config
from rlhfkit.training.resume import check_fingerprint, fingerprint


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_changed_data_file_is_refused_naming_it(tmp_path):
    data = _write(tmp_path / "prefs.jsonl", '{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    cfg = load_config(None, [f"rm.data.path={data}"])
    saved = fingerprint(cfg, cfg.rm, tmp_path / "run" / "rm")
    check_fingerprint(saved, fingerprint(cfg, cfg.rm, tmp_path / "run" / "rm"), "rm", Path("ckpt"))
    data.write_text('{"prompt": "p", "chosen": "b", "rejected": "a"}\n')  # same size, same path, other content
    with pytest.raises(ConfigError, match=rf"the data file rm\.data\.path \({data}\) changed since this checkpoint"):
        check_fingerprint(saved, fingerprint(cfg, cfg.rm, tmp_path / "run" / "rm"), "rm", Path("ckpt"))


@pytest.mark.parametrize("override, key", [
    ("task.num_preference_pairs=512", "task.num_preference_pairs=1024"),
    ("device=cpu", "device='auto'"),
    ("seed=7", "seed=42"),
])
def test_run_level_keys_are_part_of_every_stage_fingerprint(override, key):
    before = load_config(None, ["task={}"])
    after = load_config(None, ["task={}", override])
    for stage in ("sft", "rm", "ppo"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("'", "'")):
            check_fingerprint(fingerprint(before, getattr(before, stage), Path("run") / stage),
                              fingerprint(after, getattr(after, stage), Path("run") / stage), stage, Path("ckpt"))


def test_a_moved_run_directory_has_the_same_fingerprint(tmp_path):
    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    _write(old / "task" / "ppo_prompts.jsonl", '{"prompt": "p"}\n')
    (old / "rm" / "model").mkdir(parents=True)

    def fp(run: Path):
        cfg = load_config(None, [f"ppo.data.path={run / 'task/ppo_prompts.jsonl'}", f"ppo.policy.name_or_path={run / 'sft/model'}",
                                 f"ppo.reward.model_paths=[{run / 'rm/model'}]"])
        return fingerprint(cfg, cfg.ppo, run / "ppo")

    saved = fp(old)
    assert saved["ppo"]["data"]["path"] == "{run_dir}/task/ppo_prompts.jsonl"
    assert saved["ppo"]["reward"]["model_paths"] == ["{run_dir}/rm/model"]
    shutil.move(old, new)
    check_fingerprint(saved, fp(new), "ppo", Path("ckpt"))
