"""The `rlhfkit` command: thin wrappers that load + validate a config, then call a stage's run().

    rlhfkit run                      # the bundled default task, all three stages, report
    rlhfkit run --config my.yaml     # your models and data
    rlhfkit sft|rm|ppo --config my.yaml --set sft.optim.learning_rate=3e-5

Every user mistake (config, data, model path) ends in one red line naming what and where,
exit code 2, before any training starts when it can be known then.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlhfkit.config import ConfigError, RunConfig, load_config, resolve_output_dir, save_resolved

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="rlhfkit — SFT → reward model → PPO. Each command reads one YAML config (see configs/).",
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config (see configs/ and docs/config.md).")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key, e.g. --set sft.optim.learning_rate=3e-5 (repeatable)."),
]
OutputOpt = Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Run directory (overrides output_dir).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing stage/run directory.")]


def _user_errors() -> tuple[type[BaseException], ...]:
    from rlhfkit.data.records import DataError
    from rlhfkit.models.load import ModelLoadError

    return (ConfigError, DataError, ModelLoadError)


def _fail(message: str) -> None:
    from rlhfkit.training.progress import console

    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _quiet_libraries() -> None:
    """Hide transformers' per-load progress bars and reports; our own progress is shown instead."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _load(config: Path | None, overrides: list[str] | None, output_dir: Path | None) -> RunConfig:
    overrides = list(overrides or [])
    if output_dir is not None:
        overrides.append(f"output_dir={output_dir}")
    return load_config(config, overrides)


def _stage_dir(run_dir: Path, stage: str, overwrite: bool) -> Path:
    stage_dir = run_dir / stage
    if stage_dir.exists() and any(stage_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{stage_dir} already exists: pass --overwrite to replace it, or choose --output-dir")
        shutil.rmtree(stage_dir)
    return stage_dir


def _run_stage(stage: str, config: Path | None, overrides: list[str] | None, output_dir: Path | None, overwrite: bool) -> None:
    _quiet_libraries()
    try:
        cfg = _load(config, overrides, output_dir)
        run_dir = resolve_output_dir(cfg)
        stage_dir = _stage_dir(run_dir, stage, overwrite)
        module = __import__(f"rlhfkit.stages.{stage}", fromlist=["run", "validate"])
        module.validate(cfg)
        save_resolved(cfg, run_dir / f"{stage}_config.yaml")
        output = module.run(cfg, stage_dir)
    except _user_errors() as err:
        _fail(str(err))
        return
    from rlhfkit.report.summary import print_stage_summary

    print_stage_summary(stage, output)


@app.command()
def sft(config: ConfigOpt = None, set: SetOpt = None, output_dir: OutputOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Stage 1: supervised fine-tuning (completion-only loss) → OUTPUT_DIR/sft/model."""
    _run_stage("sft", config, set, output_dir, overwrite)


@app.command()
def rm(config: ConfigOpt = None, set: SetOpt = None, output_dir: OutputOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Stage 2: reward model on preference pairs (Bradley–Terry) → OUTPUT_DIR/rm/model."""
    _run_stage("rm", config, set, output_dir, overwrite)


@app.command()
def ppo(config: ConfigOpt = None, set: SetOpt = None, output_dir: OutputOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Stage 3: PPO against the reward model with a KL penalty → OUTPUT_DIR/ppo/policy."""
    _run_stage("ppo", config, set, output_dir, overwrite)


@app.command()
def run(
    config: ConfigOpt = None,
    set: SetOpt = None,
    output_dir: OutputOpt = None,
    overwrite: OverwriteOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="The bundled task at toy scale (about 3 minutes on 2 CPU cores).")] = False,
) -> None:
    """All three stages, then evaluation and report.html. No --config: the bundled default task."""
    from rlhfkit.config.load import default_config_path

    _quiet_libraries()
    try:
        if config is not None and quick:
            raise ConfigError("--quick selects the bundled quick preset; it cannot be combined with --config")
        path = config if config is not None else default_config_path("quick" if quick else "default")
        cfg = _load(path, set, output_dir)
        run_dir = resolve_output_dir(cfg)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise ConfigError(f"{run_dir} already exists: pass --overwrite to replace it, or choose --output-dir")
            shutil.rmtree(run_dir)
        from rlhfkit.pipeline import run_pipeline

        summary = run_pipeline(cfg, run_dir)
    except _user_errors() as err:
        _fail(str(err))
        return
    from rlhfkit.report.summary import print_run_summary

    print_run_summary(summary)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory (finished or not).")]) -> None:
    """(Re)write RUN_DIR/report.html with plots from the run's metrics."""
    from rlhfkit.report.html import report_command

    try:
        report_command(run_dir)
    except _user_errors() as err:
        _fail(str(err))


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="rlhfkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
