"""Experiment trackers beside metrics.jsonl: `logging.report_to: [tensorboard, wandb, mlflow]`.

metrics.jsonl is always written and is the record rlhfkit's report reads; a tracker mirrors the
same numbers (every numeric value of each logged line, at its step) to a tool people already watch.
Each is used directly through its own small API rather than through accelerate's tracker layer:
that layer needs the Accelerator built with `log_with=` before the stage knows its log directory,
and the three calls per tool below are all rlhfkit needs.

- tensorboard: event files in STAGE/tensorboard (`tensorboard --logdir RUN_DIR`).
- wandb: one W&B run per stage, files in STAGE/wandb. With no network, or `WANDB_MODE=offline`,
  it runs offline and `wandb sync STAGE/wandb/offline-run-*` uploads later; rlhfkit sets offline
  mode when neither WANDB_MODE nor WANDB_API_KEY is set, so a run never waits on a login prompt.
- mlflow: one MLflow run per stage in `MLFLOW_TRACKING_URI`, else a local file store in RUN_DIR/mlruns
  (`MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN_DIR/mlruns`).

Which packages are needed is checked when the config is validated (`missing_packages`), before
any model is loaded; the error line names the extra to install.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Protocol

TRACKERS = ("tensorboard", "wandb", "mlflow")
#: The module each tracker imports (mlflow-skinny provides `mlflow` too).
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PROJECT = "rlhfkit"


def missing_packages(names: list[str]) -> list[str]:
    """The trackers in `names` whose package is not importable (checked without importing it)."""
    return [name for name in names if importlib.util.find_spec(MODULES[name]) is None]


def install_hint(name: str) -> str:
    return f"pip install 'rlhfkit[{name}]'"


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, stage_dir: Path, stage: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(stage_dir / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    def __init__(self, stage_dir: Path, stage: str):
        import wandb

        if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"  # no credentials: never block on a login prompt
        run_name = f"{stage_dir.parent.name}/{stage}"
        # console="off": W&B must not wrap stdout, where rlhfkit's live progress bar draws.
        self._run = wandb.init(project=PROJECT, name=run_name, group=stage_dir.parent.name, job_type=stage,
                               dir=str(stage_dir), reinit="create_new", settings=wandb.Settings(console="off"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowTracker:
    """Through MlflowClient, not mlflow's process-global active run: `rlhfkit run` opens one per stage."""

    def __init__(self, stage_dir: Path, stage: str):
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store; MLflow 3 wants an explicit opt-in for it (no database needed)
            uri = (stage_dir.parent / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(PROJECT)
        self._run_id = self._client.create_run(experiment_id, run_name=f"{stage_dir.parent.name}/{stage}").info.run_id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(names: list[str], stage_dir: Path, stage: str) -> list[Tracker]:
    """One open tracker per name (validated names; their packages were checked with the config).

    A tracker that cannot start (a server down, a bad URI) is one ConfigError line, not a traceback."""
    from rlhfkit.config.load import ConfigError

    opened: list[Tracker] = []
    for name in names:
        try:
            opened.append(_CLASSES[name](Path(stage_dir), stage))
        except Exception as err:  # noqa: BLE001 - any tracker start-up failure becomes one readable line
            for tracker in opened:
                tracker.close()
            first = (str(err).strip().splitlines() or [""])[0]
            raise ConfigError(f"{stage}.logging.report_to: {name} could not start: {type(err).__name__}: {first}") from None
    return opened


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics line, less its bookkeeping (`step`, and booleans)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
