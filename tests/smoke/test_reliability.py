"""Issue #11 through the CLI, as a user meets it: nothing deleted that rlhfkit did not write, one
process per run directory, --resume refusing what changed (a finished stage's key, a data file) but
following a moved run directory, and one line (no traceback) for each bad input or fault."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

MARKER = ".rlhfkit-run"  # rlhfkit.rundir.MARKER, spelled out so this file also runs against older code
from rlhfkit.training.faults import INJECT_ENV
from rlhfkit.training.metrics import read_metrics

from .test_resume import GATE_ENV, HERE, Proc, cli, gate, ppo_args, sft_args, sft_file  # noqa: F401 - a fixture

ROOT = HERE.parents[1]


def one_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delenv(GATE_ENV, raising=False)
    monkeypatch.delenv(INJECT_ENV, raising=False)
    import test_resume

    test_resume._calls = 0


# ------------------------------------------------------------------ --overwrite and the lock


def test_overwrite_never_deletes_a_users_folder(tmp_path, monkeypatch):
    folder = tmp_path / "my-project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    result = cli("run", "-o", folder, "--overwrite")
    assert result.exit_code == 2
    assert f"--overwrite refuses to delete {folder}: it has no {MARKER} marker" in one_line(result)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "src").is_dir()

    monkeypatch.chdir(folder)
    result = cli("run", "-o", ".", "--overwrite")
    assert result.exit_code == 2 and "refuses to delete" in one_line(result)
    monkeypatch.setenv("HOME", str(folder))
    result = cli("run", "-o", "~", "--overwrite")
    assert result.exit_code == 2 and "refuses to delete" in one_line(result)
    assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_run_directory_someone_added_files_to(tmp_path, tiny_model_dir, sft_file):
    out = tmp_path / "run"
    assert cli(*sft_args(tiny_model_dir, sft_file, "sft.optim.max_steps=1"), "-o", out).exit_code == 0
    assert (out / MARKER).is_file()
    (out / "analysis.ipynb").write_text("{}")
    result = cli("run", "-o", out, "--overwrite")
    assert result.exit_code == 2 and "it holds files rlhfkit did not write (analysis.ipynb)" in one_line(result)
    assert (out / "analysis.ipynb").exists() and (out / "sft" / "model").is_dir()


def test_a_second_process_in_the_same_run_directory_is_refused(tmp_path, tiny_model_dir, prompts_file):
    run_dir = tmp_path / "run"
    gate_dir, spec = gate(tmp_path, "gate", 2)
    first = Proc(tmp_path, *ppo_args(tiny_model_dir, prompts_file), "-o", run_dir, **{GATE_ENV: spec})
    try:
        first.wait_for(lambda: (gate_dir / "reached").exists())  # parked inside iteration 2, lock held
        for args in (("ppo", "--resume", run_dir), (*ppo_args(tiny_model_dir, prompts_file), "-o", run_dir, "--overwrite")):
            result = cli(*args)
            assert result.exit_code == 2
            assert f"{run_dir} is in use by another rlhfkit process (pid {first.proc.pid}, `rlhfkit ppo`" in one_line(result)
        (gate_dir / "release").write_text("")
        assert first.proc.wait(timeout=120) == 0, first.output
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    lines = read_metrics(run_dir / "ppo" / "metrics.jsonl")
    assert [m["step"] for m in lines if "objective/kl" in m] == list(range(1, 7))  # one run's lines, not two


# ------------------------------------------------------------------ --resume: what it refuses and what it follows


def test_resume_refuses_a_changed_data_file(tmp_path, tiny_model_dir, monkeypatch):
    data = tmp_path / "prefs.jsonl"
    shutil.copy(ROOT / "examples/data/preferences.jsonl", data)
    args = ["rm", "-o", tmp_path / "run"]
    for s in [f"rm.model.name_or_path={tiny_model_dir}", f"rm.data.path={data}", "device=cpu", "rm.optim.batch_size=4",
              "rm.checkpoint.save_every=1", "rm.checkpoint.max_consecutive_faults=2", "rm.logging.progress=false"]:
        args += ["--set", s]
    monkeypatch.setenv(INJECT_ENV, "loss@2,3")
    assert cli(*args).exit_code == 3
    monkeypatch.delenv(INJECT_ENV)
    lines = data.read_text().splitlines()
    data.write_text("\n".join(reversed(lines)) + "\n")  # same records, same size, another order: another run
    result = cli("rm", "--resume", tmp_path / "run")
    assert result.exit_code == 2
    assert f"the data file rm.data.path ({data}) changed since this checkpoint was written" in one_line(result)


def _pipeline_args(tiny_model_dir: Path, out: Path) -> list:
    args = ["run", "--config", ROOT / "configs/example.yaml", "-o", out]
    for s in [f"sft.model.name_or_path={tiny_model_dir}", f"sft.data.path={ROOT / 'examples/data/sft.jsonl'}",
              f"rm.data.path={ROOT / 'examples/data/preferences.jsonl'}", f"ppo.data.path={ROOT / 'examples/data/prompts.jsonl'}",
              "device=cpu", "sft.optim={learning_rate: 1.0e-3, epochs: 1, batch_size: 8}",
              "rm.optim={learning_rate: 1.0e-3, epochs: 1, batch_size: 8}", "ppo.num_iterations=3", "ppo.batch_size=8",
              "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1", "ppo.generation.max_new_tokens=8",
              "ppo.checkpoint.save_every=1", "ppo.checkpoint.max_consecutive_faults=2", "eval.num_prompts=4",
              "sft.logging.progress=false", "rm.logging.progress=false", "ppo.logging.progress=false"]:
        args += ["--set", s]
    return args


def test_a_moved_run_resumes_but_not_with_a_finished_stage_changed(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "mount-a" / "run"
    monkeypatch.setenv(INJECT_ENV, "loss@2,3")
    assert cli(*_pipeline_args(tiny_model_dir, out)).exit_code == 3  # stopped inside PPO after checkpoint 1
    monkeypatch.delenv(INJECT_ENV)

    # SFT finished: its key is not checked by any checkpoint, but the run started with another value
    result = cli("run", "--resume", out, "--set", "sft.optim.learning_rate=0.5")
    assert result.exit_code == 2
    assert "the run started with sft.optim.learning_rate=0.001, the config now says 0.5" in one_line(result)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("num_iterations: 3", "num_iterations: 4"))  # an edit by hand
    result = cli("run", "--resume", out)
    assert result.exit_code == 2 and "ppo.num_iterations=3, the config now says 4" in one_line(result)
    config.write_text(config.read_text().replace("num_iterations: 4", "num_iterations: 3"))

    moved = tmp_path / "mount-b" / "run"  # a pre-empted job continues from another mount point
    moved.parent.mkdir()
    shutil.move(out, moved)
    result = cli("run", "--resume", moved)
    assert result.exit_code == 0, result.output
    text = one_line(result)
    assert "[ppo] resuming from" in text and "step-00000001" in text
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["environment"]["torch"] == torch.__version__
    assert summary["environment"]["torch_num_threads"] == torch.get_num_threads()
    assert {"transformers", "accelerate", "machine", "cpu_capability"} <= set(summary["environment"])


# ------------------------------------------------------------------ signals


def test_a_second_ctrl_c_during_a_slow_reward_callable_exits_130(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    result = cli(*ppo_args(tiny_model_dir, prompts_file, callable_="reward_fns:interrupted_twice"),
                 "-o", tmp_path / "run")
    assert result.exit_code == 130, result.output
    text = one_line(result)
    assert "SIGINT received: stopped without saving" in text and "--resume" in text
    assert "raised" not in text and "error:" not in text


# ------------------------------------------------------------------ bad input: one line each


def test_every_pair_dropped_by_truncation_is_one_line_and_leaves_no_stage(tmp_path, tiny_model_dir):
    prefix = " ".join(["the quick brown fox"] * 3)
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": "p", "chosen": f" {prefix} good", "rejected": f" {prefix} bad"}) + "\n"
                            for _ in range(8)))
    out = tmp_path / "run"
    args = ["rm", "-o", out, "--set", f"rm.model.name_or_path={tiny_model_dir}", "--set", f"rm.data.path={data}",
            "--set", "rm.data.max_length=12", "--set", "rm.data.eval_fraction=0", "--set", "rm.logging.progress=false"]
    result = cli(*args)
    assert result.exit_code == 2
    assert f"{data}: all 8 training pairs were dropped by truncation to 12 tokens" in one_line(result)
    assert not (out / "rm").exists()
    again = cli(*args[:-6], "--set", "rm.data.max_length=128", "--set", "rm.logging.progress=false")
    assert again.exit_code == 0, again.output  # no --overwrite needed


def test_markup_in_user_text_is_printed_verbatim(tmp_path):
    result = cli("sft", "-o", tmp_path / "run", "--set", "sft.model.name_or_path=gpt2",
                 "--set", f"sft.data.path={tmp_path}/[/x]/data.jsonl")
    assert result.exit_code == 2 and f"{tmp_path}/[/x]/data.jsonl: file not found" in one_line(result)
    result = cli("sft", "-o", tmp_path / "run", "--set", "sft.model.name_or_path=gpt2",
                 "--set", f"sft.data.path={tmp_path}/data.parquet")
    assert result.exit_code == 2 and "pip install rlhfkit[datasets]" in one_line(result)


@pytest.mark.parametrize("command", ["sft", "rm", "ppo", "run"])
def test_device_and_mixed_precision_the_machine_lacks_are_refused_on_every_stage(tmp_path, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for override, needle in (("device=cuda", "device: cuda, but torch finds no CUDA GPU"),
                             ("mixed_precision=fp16", "mixed_precision: fp16 needs a CUDA GPU")):
        result = cli(command, "-o", tmp_path / "run", "--set", override)
        assert result.exit_code == 2 and needle in one_line(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needle", [
    (["--set", "seed=9223372036854775808"], "seed: Input should be less than or equal to 4294967295"),
    (["--set", "sft.optim.epochs=[1"], "--set sft.optim.epochs: '[1' is not valid YAML"),
    (["--set", "sft.optim.epochs=true"], "sft.optim.epochs: Input should be a valid number"),
])
def test_bad_values_are_one_line(tmp_path, args, needle):
    result = cli("sft", "-o", tmp_path / "run", *args)
    assert result.exit_code == 2 and needle in one_line(result)


def test_output_dir_that_is_a_file_or_looks_like_yaml(tmp_path, tiny_model_dir, sft_file, monkeypatch):
    (tmp_path / "results.txt").write_text("keep")
    result = cli(*sft_args(tiny_model_dir, sft_file), "-o", tmp_path / "results.txt")
    assert result.exit_code == 2 and "results.txt is a file, not a directory" in one_line(result)
    assert (tmp_path / "results.txt").read_text() == "keep"
    monkeypatch.chdir(tmp_path)
    result = cli(*sft_args(tiny_model_dir, sft_file, "sft.optim.max_steps=1"), "-o", "2026-01-01")  # a path, not a date
    assert result.exit_code == 0, result.output
    assert (tmp_path / "2026-01-01" / "sft" / "model").is_dir()


def test_a_bad_nan_injection_spec_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "loss@three")
    result = cli("sft", "-o", tmp_path / "run")
    assert result.exit_code == 2 and "RLHFKIT_INJECT_NAN='loss@three'" in one_line(result)


def test_a_full_disk_is_one_line_naming_the_path(tmp_path, tiny_model_dir, sft_file, monkeypatch):
    def full(*args, **kwargs):  # what safetensors raised when a 1 MB tmpfs filled up
        raise __import__("safetensors").SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    out = tmp_path / "run"
    result = cli(*sft_args(tiny_model_dir, sft_file), "-o", out)
    assert result.exit_code == 2
    text = one_line(result)
    assert f"no space left on device writing {out / 'sft' / 'checkpoints' / 'step-00000002'} (it needs about" in text
    assert not list((out / "sft" / "checkpoints").glob("*.tmp-*"))


def test_ppo_refuses_to_score_with_a_model_that_has_no_trained_head(tmp_path, tiny_model_dir, prompts_file):
    """`ppo.reward.model_paths` pointing at the SFT model instead of the RM: a random head, a random reward."""
    args = ppo_args(tiny_model_dir, prompts_file, "ppo.reward.callable=null", f"ppo.reward.model_paths=[{tiny_model_dir}]")
    result = cli(*args, "-o", tmp_path / "run")
    assert result.exit_code == 2
    assert f"ppo.reward.model_paths[0]: {tiny_model_dir} has no trained score head" in one_line(result)
    assert not (tmp_path / "run" / "ppo" / "metrics.jsonl").exists()


def test_siblings_found_by_trying_bad_inputs(tmp_path, tiny_model_dir, sft_file, monkeypatch):
    """Each of these was accepted silently, gave a misleading line or a traceback before."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, no_tokenizer / name)
    cases = [
        (["sft", "--config", "adir"], "adir: is a directory, not a YAML config file"),
        (sft_args(tiny_model_dir, sft_file, "sft.data.path=adir") + ["-o", "r1"], "adir: is a directory; give a .jsonl file"),
        (sft_args(tiny_model_dir, sft_file) + ["-o", ""], "output_dir is empty"),
        (["run", "--set", "stages=[]", "-o", "r2"], "stages: List should have at least 1 item"),
        (["report", "afile"], "afile is not a run directory (it is a file)"),
        # AutoTokenizer builds a 1-token tokenizer from config.json alone: training would run on nothing
        (sft_args(no_tokenizer, sft_file) + ["-o", "r3"], f"sft.model: no tokenizer in {no_tokenizer}"),
    ]
    for args, needle in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in one_line(result), (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "no_tokenizer"]  # nothing written
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path / "afile"))
    result = cli("run", "--quick", "-o", "r4")
    assert result.exit_code == 2 and "RLHFKIT_CACHE=" in one_line(result) and "is a file, not a directory" in one_line(result)
