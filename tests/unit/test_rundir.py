"""--overwrite removes only what rlhfkit wrote; one process at a time per run directory; --resume
refuses a config that differs from the one the run started with."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfkit import rundir
from rlhfkit.config.load import ConfigError, load_config


def _ours(path: Path) -> Path:
    """A run directory as rlhfkit leaves it."""
    with rundir.holding(path, "test", create=True):
        (path / "config.yaml").write_text("seed: 1\n")
        (path / "sft").mkdir()
        (path / "sft" / "metrics.jsonl").write_text("{}\n")
    return path


def test_overwrite_replaces_a_run_rlhfkit_made(tmp_path):
    run = _ours(tmp_path / "run")
    with pytest.raises(ConfigError, match="already exists: pass --overwrite"):
        rundir.check_fresh(run, overwrite=False)
    with rundir.holding(run, "test", create=True):
        rundir.clear(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == sorted([rundir.LOCK, rundir.MARKER])


def test_overwrite_refuses_a_directory_with_foreign_files(tmp_path):
    run = _ours(tmp_path / "run")
    (run / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match=r"refuses to delete .*run: it holds files rlhfkit did not write \(thesis\.tex\)"):
        rundir.check_fresh(run, overwrite=True)
    assert (run / "thesis.tex").exists()


def test_overwrite_refuses_a_directory_rlhfkit_did_not_make(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sft").mkdir(parents=True)
    (folder / "config.yaml").write_text("mine")  # names rlhfkit uses, but no marker
    (folder / "sft" / "notes.txt").write_text("mine")
    for stage in (None, "sft"):
        with pytest.raises(ConfigError, match=r"has no \.rlhfkit-run marker"):
            rundir.check_fresh(folder, overwrite=True, stage=stage)
    assert (folder / "config.yaml").read_text() == "mine"


@pytest.mark.parametrize("which", ["cwd", "parent of cwd", "home", "root"])
def test_overwrite_never_removes_cwd_home_or_root(tmp_path, monkeypatch, which):
    work = _ours(tmp_path / "work")
    (work / "inner").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _ours(tmp_path / "home")
    target = {"cwd": work, "parent of cwd": work, "home": tmp_path / "home", "root": Path("/")}[which]
    monkeypatch.chdir(work / "inner" if which == "parent of cwd" else work if which == "cwd" else tmp_path)
    with pytest.raises(ConfigError, match=r"refuses to delete"):
        rundir._refuse_removal(target, "run")


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(ConfigError, match="file"):
            rundir.check_fresh(target, overwrite=True)


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from rlhfkit import rundir\n"
        f"with rundir.holding(Path({str(run)!r}), 'rlhfkit ppo', create=True):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"is in use by another rlhfkit process \(pid {holder.pid}, `rlhfkit ppo`"):
            with rundir.holding(run, "rlhfkit run", create=False):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    with rundir.holding(run, "rlhfkit run", create=False):  # released when the holder died
        pass


def test_resume_refuses_a_config_the_run_did_not_start_with(tmp_path):
    run = _ours(tmp_path / "run")
    start = load_config(None, ["task={}"])
    rundir.record_run_config(run, start)
    rundir.check_run_config(run, load_config(None, ["task={}", "ppo.logging.log_every=3", "output_dir=/elsewhere"]))
    resolved = load_config(None, ["task={}", "sft.model.name_or_path=/x/base", "ppo.reward.model_paths=[/x/rm]"])
    rundir.check_run_config(run, resolved)  # filled in by the pipeline: config.yaml at the end of a run
    with pytest.raises(ConfigError, match=r"started with task\.num_preference_pairs=1024, the config now says 512"):
        rundir.check_run_config(run, load_config(None, ["task={num_preference_pairs: 512}"]))
