"""A checkpoint that is complete by size but not by content: sha256 in the manifest, a corrupt newest
checkpoint warned about and the previous one loaded; a full disk is one line, nothing half-written."""

from __future__ import annotations

import json

import pytest
import torch

from rlhfkit.training import checkpoint as checkpoint_module
from rlhfkit.training.checkpoint import (
    MANIFEST_FILE,
    STATE_FILE,
    DiskFullError,
    atomic_directory,
    corruption,
    list_checkpoints,
    sha256_file,
)
from rlhfkit.training.progress import console

from .test_checkpoint import Trainer


def _same_size_garbage(path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:])


def test_the_manifest_holds_every_file_hash(tmp_path):
    t = Trainer(tmp_path)
    path = t.ckpt.save(1, {})
    files = json.loads((path / MANIFEST_FILE).read_text())["files"]
    assert set(files) == {"model.safetensors", "optimizer.pt", STATE_FILE}
    for name, entry in files.items():
        assert entry == {"size": (path / name).stat().st_size, "sha256": sha256_file(path / name)}
    assert corruption(path) is None


@pytest.mark.parametrize("victim", ["model.safetensors", STATE_FILE, "optimizer.pt"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, victim):
    t = Trainer(tmp_path, keep_last=3)
    t.step()
    t.ckpt.save(1, {"at": 1})
    after_one = [p.detach().clone() for p in t.model.parameters()]
    t.step()
    newest = t.ckpt.save(2, {"at": 2})
    _same_size_garbage(newest / victim)  # same size: the size check alone passes it
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001", "step-00000002"]

    b = Trainer(tmp_path, seed=1, keep_last=3)  # other init: the weights must come from checkpoint 1
    b.ckpt.fingerprint = t.ckpt.fingerprint
    with console.capture() as captured:
        resumed = b.ckpt.restore()
    text = " ".join(captured.get().split())
    assert resumed == {"step": 1, "at": 1}
    assert f"checkpoint {newest} is corrupt ({victim} does not match the sha256 in its manifest)" in text
    assert "resuming from" in text and "step-00000001" in text
    assert all(torch.equal(a, p) for a, p in zip(after_one, b.model.parameters()))
    assert (tmp_path / "checkpoints" / "step-00000002.corrupt").is_dir()  # kept aside, never listed again
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001"]


def test_a_checkpoint_that_fails_to_load_falls_back_too(tmp_path):
    """Hashes match (the manifest was rewritten) but the state is unusable: still a fallback, not a traceback."""
    t = Trainer(tmp_path, keep_last=3)
    t.ckpt.save(1, {})
    newest = t.ckpt.save(2, {})
    (newest / STATE_FILE).write_text("{not json" + " " * ((newest / STATE_FILE).stat().st_size - 9))
    manifest = json.loads((newest / MANIFEST_FILE).read_text())
    manifest["files"][STATE_FILE]["sha256"] = sha256_file(newest / STATE_FILE)
    (newest / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert Trainer(tmp_path, keep_last=3).ckpt.restore() == {"step": 1}


def test_every_checkpoint_corrupt_starts_afresh_with_a_warning(tmp_path):
    t = Trainer(tmp_path)
    only = t.ckpt.save(1, {})
    _same_size_garbage(only / "model.safetensors")
    with console.capture() as captured:
        assert Trainer(tmp_path).ckpt.restore() is None
    assert "is corrupt" in captured.get() and "starting the stage afresh" in captured.get()


# What each writer raised when a 1 MB tmpfs filled up (mount -t tmpfs -o size=1m), recorded verbatim.
FULL_DISK = {
    "weights": lambda: __import__("safetensors").SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"),
    "optimizer": lambda: RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
    "state": lambda: OSError(28, "No space left on device"),
}


@pytest.mark.parametrize("writer", sorted(FULL_DISK))
def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, writer):
    import safetensors.torch

    def full(*args, **kwargs):
        raise FULL_DISK[writer]()

    t = Trainer(tmp_path)
    t.step()
    if writer == "weights":
        monkeypatch.setattr(safetensors.torch, "save_model", full)
    elif writer == "optimizer":
        monkeypatch.setattr(checkpoint_module.torch, "save", full)
    else:
        monkeypatch.setattr(checkpoint_module.json, "dumps", full)
    with pytest.raises(DiskFullError) as raised:
        t.ckpt.save(1, {})
    message = str(raised.value)
    assert "no space left on device writing" in message and "it needs about" in message
    assert str(tmp_path / "checkpoints" / "step-00000001") in message
    assert "unexpected pos" not in message and "os error" not in message
    assert not list((tmp_path / "checkpoints").iterdir())  # no .tmp-* directory, no half checkpoint


def test_disk_full_in_any_atomic_write(tmp_path):
    with pytest.raises(DiskFullError, match=r"writing .*final \(it needs about 1\.0 MB"):
        with atomic_directory(tmp_path / "final", expected_bytes=2**20):
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unrelated"):  # other failures pass through unchanged
        with atomic_directory(tmp_path / "final"):
            raise ValueError("unrelated")


def test_a_vague_write_error_with_no_room_left_is_a_full_disk(tmp_path, monkeypatch):
    """On a real 1 MB tmpfs torch.save also reported only `basic_ios::clear: iostream error`: with the
    filesystem out of room that is a full disk; with room to spare it is some other error, passed on."""
    import shutil
    from collections import namedtuple

    def vague(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    usage = namedtuple("usage", "total used free")
    t = Trainer(tmp_path)
    t.step()
    monkeypatch.setattr(checkpoint_module.torch, "save", vague)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 100, 100))
    with pytest.raises(DiskFullError, match="no space left on device writing"):
        t.ckpt.save(1, {})
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**40, 0, 2**40))
    with pytest.raises(RuntimeError, match="iostream error"):
        t.ckpt.save(1, {})
