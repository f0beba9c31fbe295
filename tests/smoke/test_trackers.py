"""`logging.report_to`: TensorBoard, W&B (offline, no network) and MLflow mirror metrics.jsonl; a
tracker whose package is missing is one config error line, before any model is loaded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config import ConfigError, load_config
from rlhfkit.training import trackers

runner = CliRunner()


def _sft_args(tmp_path: Path, model_dir: Path, *extra: str) -> list[str]:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": "the quick", "response": " brown fox"}) + "\n" for _ in range(16)))
    return ["sft", "-o", str(tmp_path / "run"), "--set", f"sft.model.name_or_path={model_dir}", "--set", f"sft.data.path={data}",
            "--set", "sft.optim.max_steps=3", "--set", "sft.logging.log_every=1", "--set", "sft.logging.progress=false",
            *extra]


def test_missing_tracker_package_is_one_line_before_any_work(tmp_path, tiny_model_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = runner.invoke(app, _sft_args(tmp_path, tiny_model_dir, "--set", "sft.logging.report_to=[wandb]"))
    assert result.exit_code == 2
    assert "sft.logging.report_to: wandb needs its optional package: pip install 'rlhfkit[wandb]'" in \
        " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_tensorboard_flag_is_an_alias_and_unknown_trackers_are_refused():
    if trackers.missing_packages(["tensorboard"]):
        pytest.skip("tensorboard not installed")
    cfg = load_config(None, ["sft.logging.tensorboard=true", "rm.logging.report_to=[tensorboard]"])
    assert cfg.sft.logging.report_to == ["tensorboard"] and cfg.rm.logging.report_to == ["tensorboard"]
    with pytest.raises(ConfigError, match=r"sft.logging.report_to.0: Input should be 'tensorboard', 'wandb' or 'mlflow'"):
        load_config(None, ["sft.logging.report_to=[neptune]"])


def _installed(*names: str) -> str | None:
    missing = trackers.missing_packages(list(names))
    return f"not installed: {missing} (make test installs them)" if missing else None


@pytest.mark.skipif(_installed("tensorboard", "wandb", "mlflow") is not None, reason=_installed("tensorboard", "wandb", "mlflow") or "")
def test_every_tracker_gets_the_metrics_offline(tmp_path, tiny_model_dir, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    result = runner.invoke(app, _sft_args(tmp_path, tiny_model_dir, "--set", "sft.logging.report_to=[tensorboard,wandb,mlflow]"))
    assert result.exit_code == 0, result.output
    stage = tmp_path / "run" / "sft"
    losses = [m["train/loss"] for m in map(json.loads, (stage / "metrics.jsonl").read_text().splitlines()) if "train/loss" in m]
    assert len(losses) == 3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(stage / "tensorboard"))
    events.Reload()
    assert [round(e.value, 4) for e in events.Scalars("train/loss")] == [round(v, 4) for v in losses]

    (offline,) = (stage / "wandb").glob("offline-run-*/run-*.wandb")  # offline: kept for `wandb sync`, nothing sent
    assert b"train/loss" in offline.read_bytes()  # the history records (protobuf) name the metric

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("rlhfkit").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [round(m.value, 4) for m in sorted(history, key=lambda m: m.step)] == [round(v, 4) for v in losses]
    assert run.info.run_name == "run/sft" and run.info.status == "FINISHED"
