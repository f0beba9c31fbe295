"""StageProgress's phase bars: shown under the stage's bar while a block runs, gone after it."""

from __future__ import annotations

from rlhfkit.training.progress import StageProgress


def test_a_phase_bar_moves_and_is_removed():
    with StageProgress("PPO", 3) as bar:
        progress = bar._progress
        with bar.phase("iteration 1: update", 4) as tick:
            tasks = progress.tasks
            assert [t.description for t in tasks] == ["PPO", "  iteration 1: update"]
            tick()
            tick()
            assert tasks[1].completed == 2 and tasks[1].total == 4
        with bar.phase("iteration 1: rollout"):  # no total: a pulsing bar while one long call runs
            assert progress.tasks[1].total is None
        assert [t.description for t in progress.tasks] == ["PPO"]
        bar.advance()
        assert progress.tasks[0].completed == 1


def test_a_disabled_bar_has_silent_phases():
    with StageProgress("PPO", 3, enabled=False) as bar:
        with bar.phase("update", 4) as tick:
            tick()  # a no-op, not an error
        assert bar._progress is None
