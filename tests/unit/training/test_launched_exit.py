"""A process of a multi-process launch ends through `exit_launched_process` (cli.main): its exit code
and its output survive the `os._exit` that skips interpreter finalization (where gloo's threads,
kept alive by DDP, aborted finished runs with SIGABRT)."""

from __future__ import annotations

import os
import subprocess
import sys


def _launched(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "rlhfkit.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_success_keeps_exit_code_0_and_every_line_of_output():
    done = _launched("config", "ppo.kl")
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr  # piped streams, flushed before os._exit, from the first line to the last
    assert "ppo.kl: The KL penalty" in out and "All keys: docs/config.md" in out


def test_a_user_error_keeps_exit_code_2_and_its_one_line():
    done = _launched("config", "nosuch")
    assert done.returncode == 2
    assert "error: no config section 'nosuch'" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
