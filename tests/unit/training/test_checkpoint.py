"""Checkpointer: exact round trip of every kind of state, newest *complete* checkpoint only, torn
writes ignored and cleaned, keep_last, safe loading (no unpickling), config check, save cadence."""

from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import CheckpointSection
from rlhfkit.training import signals
from rlhfkit.training.checkpoint import (
    MANIFEST_FILE,
    OPTIMIZER_FILE,
    Checkpointer,
    atomic_directory,
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    sha256_file,
)
from rlhfkit.training.signals import TrainingInterrupted


class Counter:
    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


class Trainer:
    """A tiny model with everything a stage checkpoints."""

    def __init__(self, stage_dir, seed=0, **cfg):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.scheduler = get_scheduler("linear", self.optimizer, num_warmup_steps=0, num_training_steps=100)
        self.generator = torch.Generator().manual_seed(seed)
        self.counter = Counter()
        self.ckpt = Checkpointer(
            stage_dir, CheckpointSection(**cfg), stage="test", fingerprint={"seed": seed, "test": {"lr": 1e-2}},
            models={"model": self.model}, optimizer=self.optimizer, scheduler=self.scheduler,
            generators={"g": self.generator}, stateful={"counter": self.counter, "absent": None},
        )

    def step(self):
        x = torch.randn(8, 4, generator=self.generator)
        loss = self.model(x).pow(2).mean() + torch.rand(()) * 0  # draws from the global RNG too
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.counter.n += 1
        return loss.item()

    def draws(self):
        return (random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=self.generator)))


def test_restore_continues_exactly(tmp_path):
    a = Trainer(tmp_path / "a")
    for _ in range(3):
        a.step()
    a.ckpt.save(3, {"note": "x"})
    expected = [a.step() for _ in range(3)] + [a.draws()]

    b = Trainer(tmp_path / "b", seed=1)  # different init and RNG: everything must come from the checkpoint
    b.ckpt.root = a.ckpt.root
    b.ckpt.fingerprint = a.ckpt.fingerprint
    resumed = b.ckpt.restore()
    assert resumed == {"step": 3, "note": "x"}
    assert b.counter.n == 3 and b.scheduler.last_epoch == 3
    assert [b.step() for _ in range(3)] + [b.draws()] == expected
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_layout_and_keep_last(tmp_path):
    t = Trainer(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        t.ckpt.save(step, {})
    root = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-00000002", "step-00000003"]
    files = sorted(p.name for p in (root / "step-00000003").iterdir())
    assert files == sorted([MANIFEST_FILE, OPTIMIZER_FILE, "model.safetensors", "trainer_state.json"])
    state = json.loads((root / "step-00000003" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["state"] == {"counter": {"n": 0}} and "absent" not in state["state"]
    assert set(state["rng"]) >= {"python", "numpy", "torch", "generators"}


def test_only_complete_checkpoints_are_loaded_and_leftovers_are_cleaned(tmp_path):
    t = Trainer(tmp_path)
    t.ckpt.save(1, {})
    t.ckpt.save(2, {})
    root = tmp_path / "checkpoints"
    # a writer killed mid-save leaves only a .tmp directory
    torn = root / "step-00000003.tmp-12345"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half")
    # a checkpoint whose file was truncated afterwards (disk trouble) fails its manifest
    with open(root / "step-00000002" / OPTIMIZER_FILE, "r+b") as handle:
        handle.truncate(10)
    assert not is_complete(root / "step-00000002")
    assert latest_checkpoint(root).name == "step-00000001"
    assert t.ckpt.restore()["step"] == 1
    assert not torn.exists()


def test_no_checkpoint_means_a_fresh_start_with_empty_logs(tmp_path):
    t = Trainer(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert t.ckpt.restore() is None
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_logs_are_cut_back_to_the_checkpoint(tmp_path):
    t = Trainer(tmp_path)
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n')
    t.ckpt.save(1, {})
    with open(log, "a") as handle:
        handle.write('{"step": 2}\n{"step": 3, "torn')
    t.ckpt.restore()
    assert log.read_text() == '{"step": 1}\n'


def test_optimizer_state_is_never_unpickled(tmp_path):
    """A replaced optimizer.pt, the manifest rewritten to match: torch.load(weights_only=True) refuses
    the pickle and nothing in it runs. The files pass their hashes, so this is no damage (the same
    refusal would meet every checkpoint written by another torch/DeepSpeed): one ConfigError, and
    every checkpoint stays where it is."""
    t = Trainer(tmp_path, keep_last=3)
    t.ckpt.save(1, {})
    path = t.ckpt.save(2, {})
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state": Evil()}, path / OPTIMIZER_FILE)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"][OPTIMIZER_FILE] = {"size": (path / OPTIMIZER_FILE).stat().st_size,
                                         "sha256": sha256_file(path / OPTIMIZER_FILE)}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(pickle.UnpicklingError):  # what the loader meets: the premise of the test
        torch.load(path / OPTIMIZER_FILE, weights_only=True)
    with pytest.raises(ConfigError, match="optimizer state holds what torch.load.weights_only=True. refuses.*another "
                                          "torch or DeepSpeed version.*left as they are"):
        Trainer(tmp_path, keep_last=3).ckpt.restore()
    assert not marker.exists()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001", "step-00000002"]
    assert not list((tmp_path / "checkpoints").glob("*.corrupt"))


def test_a_different_config_is_refused(tmp_path):
    t = Trainer(tmp_path)
    t.ckpt.save(1, {})
    t.ckpt.fingerprint = {"seed": 0, "test": {"lr": 5e-3}}
    with pytest.raises(ConfigError, match=r"test\.lr=0\.01, the config now says 0\.005"):
        t.ckpt.restore()


def test_safe_point_cadence_faults_and_signals(tmp_path, monkeypatch):
    t = Trainer(tmp_path, save_every=2, keep_last=10)
    for step in range(1, 6):
        t.ckpt.safe_point(step, {}, healthy=step != 4)
    t.ckpt.safe_point(6, {}, final=True)
    assert [p.name[-1] for p in list_checkpoints(tmp_path / "checkpoints")] == ["2", "6"]  # 4 followed a skipped update
    monkeypatch.setattr(signals, "_requested", 15)
    with pytest.raises(TrainingInterrupted) as info:
        t.ckpt.safe_point(7, {})
    assert info.value.exit_code == 143 and info.value.checkpoint.name == "step-00000007"
    assert is_complete(info.value.checkpoint)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "a.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
