"""The `rlhfkit` command: thin wrappers that load + validate a config, then call a stage's run().

    rlhfkit run                      # the bundled default task, all three stages, report
    rlhfkit run --config my.yaml     # your models and data
    rlhfkit sft|rm|ppo --config my.yaml --set sft.optim.learning_rate=3e-5
    rlhfkit config [SECTION]         # every key, type, default, description (= docs/config.md)

Every user mistake (config, data, model path, a failing reward callable) ends in one red line
naming what and where, exit code 2, before any training starts when it can be known then.
SIGINT / SIGTERM save a checkpoint at the end of the current step and exit with 130 / 143;
too many NaN/Inf updates in a row exit with 3; an RM refresh waiting for a person's labels
(`ppo.reward_refresh.labeler: file`) exits with 4. `--resume RUN_DIR` continues a stopped run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlhfkit import rundir
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
# A str, not a Path: Path("") is ".", and `-o "$UNSET"` must not mean the working directory.
OutputOpt = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Run directory (overrides output_dir).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing stage/run directory that rlhfkit made "
                                                         "(never one holding other files, nor ., ~ or /).")]
ResumeOpt = Annotated[
    Optional[Path],
    typer.Option("--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR (its saved config, --set allowed) "
                 "from its newest complete checkpoint; finished stages are skipped."),
]


def check_hardware(cfg: RunConfig) -> None:
    from rlhfkit.config.hardware import check_hardware as check

    check(cfg)


def _user_errors() -> tuple[type[BaseException], ...]:
    from rlhfkit.data.records import DataError
    from rlhfkit.models.load import ModelLoadError
    from rlhfkit.rewards.sources import RewardFunctionError
    from rlhfkit.training.checkpoint import DiskFullError

    return (ConfigError, DataError, ModelLoadError, RewardFunctionError, DiskFullError)


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    from rlhfkit.training.progress import console

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def _disk_full(err: OSError) -> bool:
    """checkpoint.is_disk_full, imported late (it brings torch)."""
    from rlhfkit.training.checkpoint import is_disk_full as disk_full

    return disk_full(err)


def _fail_disk_full(err: OSError) -> None:
    where = f" writing {err.filename}" if err.filename else ""
    _fail(f"no space left on device{where}: free some space, then continue with --resume")


def _check_test_aids() -> None:
    """A malformed RLHFKIT_INJECT_NAN is an error before any work, not a traceback mid-stage."""
    from rlhfkit.training.faults import INJECT_ENV, parse_injections

    parse_injections(os.environ.get(INJECT_ENV, ""))


FAULT_EXIT_CODE = 3  # training stopped after too many consecutive NaN/Inf updates


@contextmanager
def _stopping_cleanly(command: str, run_dir: Callable[[], Path | None]):
    """SIGINT/SIGTERM and numerical faults end in one line and an exit code, not a traceback."""
    from rich.markup import escape

    from rlhfkit.rewards.refresh import LabelsNeeded
    from rlhfkit.training.faults import NumericalFault
    from rlhfkit.training.progress import console
    from rlhfkit.training.signals import TrainingInterrupted, exit_on_signals

    try:
        with exit_on_signals():
            yield
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        interrupted = err if isinstance(err, TrainingInterrupted) else TrainingInterrupted(signal.SIGINT, "interrupted")
        where = run_dir()
        hint = f"; continue with: rlhfkit {command} --resume {where}" if where is not None else ""
        console.print(f"[bold yellow]interrupted:[/] {escape(f'{interrupted}{hint}')}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=interrupted.exit_code) from None
    except NumericalFault as err:
        _fail(str(err), code=FAULT_EXIT_CODE)
    except LabelsNeeded as err:
        where = run_dir()
        hint = f" (rlhfkit {command} --resume {where})" if where is not None else ""
        console.print(f"[bold yellow]waiting for labels:[/] {escape(f'{err}{hint}')}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=err.exit_code) from None


def _resume_config(run_dir: Path, names: tuple[str, ...], overrides: list[str] | None, **conflicts: object) -> RunConfig:
    """The config a run directory was started with (first of `names` found), plus --set overrides."""
    given = [f"--{k.replace('_', '-')}" for k, v in conflicts.items() if v is not None and v is not False]
    if given:
        raise ConfigError(f"--resume continues a run with the config saved in it: it cannot be combined with {', '.join(given)}")
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run directory")
    for name in names:
        if (run_dir / name).is_file():
            return load_config(run_dir / name, [*(overrides or []), _output_override(run_dir)])
    raise ConfigError(f"--resume {run_dir}: no {' or '.join(names)} in it: not an rlhfkit run directory")


def _quiet_libraries() -> None:
    """Hide transformers' per-load progress bars and reports; our own progress is shown instead.
    Under a launcher (accelerate launch, torchrun) join its process group first."""
    import transformers

    from rlhfkit.training.distributed import start_processes

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    start_processes()


def _output_override(path: Path | str) -> str:
    """`output_dir=PATH` as a quoted YAML string: `-o 2026-01-01` or `-o '[x]'` is a path, not a date or a list."""
    return f"output_dir={json.dumps(str(path))}"


def _preflight(cfg: RunConfig, stages: list[str]) -> None:
    """The memory plan's verdict before any model loads; refuses a run that cannot fit (memory/preflight.py)."""
    from rlhfkit.memory.preflight import check

    check(cfg, stages)


def _load(config: Path | None, overrides: list[str] | None, output_dir: str | None) -> RunConfig:
    overrides = list(overrides or [])
    if output_dir is not None:
        overrides.append(_output_override(output_dir))
    return load_config(config, overrides)


@contextmanager
def _holding(run_dir: Path, command: str, create: bool):
    """The run directory's lock for the block (rundir.holding). In a data-parallel run the main
    process holds it for all: the others would otherwise find it held by their own main process."""
    from rlhfkit.training.distributed import main_first, world_size

    if world_size() == 1:
        with rundir.holding(run_dir, command, create=create):
            yield
        return
    with ExitStack() as held:
        def acquire() -> None:
            held.enter_context(rundir.holding(run_dir, command, create=create))

        main_first(acquire)
        yield


def _run_stage(stage: str, config: Path | None, overrides: list[str] | None, output_dir: str | None, overwrite: bool,
               resume: Path | None = None) -> None:
    from rlhfkit.training.distributed import broadcast, main_first

    _quiet_libraries()
    run_dir: Path | None = None
    try:
        _check_test_aids()
        with _stopping_cleanly(stage, lambda: run_dir):
            if resume is not None:
                cfg = _resume_config(resume, (f"{stage}_config.yaml", "config.yaml"), overrides,
                                     config=config, output_dir=output_dir, overwrite=overwrite)
                run_dir = resume
            else:
                cfg = _load(config, overrides, output_dir)
                run_dir = broadcast(resolve_output_dir(cfg))  # one timestamp for every process
                main_first(lambda: rundir.check_fresh(run_dir, overwrite, stage))
            check_hardware(cfg)
            module = __import__(f"rlhfkit.stages.{stage}", fromlist=["run", "validate"])
            module.validate(cfg)
            _preflight(cfg, [stage])
            with _holding(run_dir, f"rlhfkit {stage}", create=resume is None):
                if resume is None:  # a resumed run keeps the config it started with (--set applies to this call only)
                    def start() -> None:
                        rundir.clear(run_dir, overwrite, stage)
                        save_resolved(cfg, run_dir / f"{stage}_config.yaml")

                    main_first(start)
                output = module.run(cfg, run_dir / stage, resume=resume is not None)
    except _user_errors() as err:
        _fail(str(err))
        return
    except OSError as err:
        if not _disk_full(err):
            raise
        _fail_disk_full(err)
    from rlhfkit.report.summary import print_stage_summary

    print_stage_summary(stage, output)


@app.command()
def sft(config: ConfigOpt = None, set: SetOpt = None, output_dir: OutputOpt = None, overwrite: OverwriteOpt = False,
        resume: ResumeOpt = None) -> None:
    """Stage 1: supervised fine-tuning (completion-only loss) → OUTPUT_DIR/sft/model."""
    _run_stage("sft", config, set, output_dir, overwrite, resume)


@app.command()
def rm(config: ConfigOpt = None, set: SetOpt = None, output_dir: OutputOpt = None, overwrite: OverwriteOpt = False,
       resume: ResumeOpt = None) -> None:
    """Stage 2: reward model on preference pairs (Bradley–Terry) → OUTPUT_DIR/rm/model."""
    _run_stage("rm", config, set, output_dir, overwrite, resume)


@app.command()
def ppo(config: ConfigOpt = None, set: SetOpt = None, output_dir: OutputOpt = None, overwrite: OverwriteOpt = False,
        resume: ResumeOpt = None) -> None:
    """Stage 3: PPO against the reward model with a KL penalty → OUTPUT_DIR/ppo/policy."""
    _run_stage("ppo", config, set, output_dir, overwrite, resume)


@app.command()
def run(
    config: ConfigOpt = None,
    set: SetOpt = None,
    output_dir: OutputOpt = None,
    overwrite: OverwriteOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="The bundled task at toy scale (under a minute on 2 CPU cores).")] = False,
    resume: ResumeOpt = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="A bundled preset by name: default, quick, assistant "
                      "(SmolLM2-135M-Instruct, about 30-40 min on 2 CPU cores), assistant-quick (the same at toy scale).")] = None,
) -> None:
    """All three stages, then evaluation and report.html. No --config: the bundled default task."""
    from rlhfkit.config.load import default_config_path
    from rlhfkit.training.distributed import broadcast, main_first

    _quiet_libraries()
    run_dir: Path | None = None
    try:
        _check_test_aids()
        with _stopping_cleanly("run", lambda: run_dir):
            if resume is not None:
                cfg = _resume_config(resume, ("config.yaml",), set, config=config, output_dir=output_dir,
                                     overwrite=overwrite, quick=quick, preset=preset)
                run_dir = resume
                rundir.check_run_config(run_dir, cfg)
            else:
                if sum((config is not None, quick, preset is not None)) > 1:
                    raise ConfigError("--config, --quick and --preset each choose the config: give one of them")
                path = config if config is not None else default_config_path(preset or ("quick" if quick else "default"))
                cfg = _load(path, set, output_dir)
                run_dir = broadcast(resolve_output_dir(cfg))  # one timestamp for every process
                main_first(lambda: rundir.check_fresh(run_dir, overwrite))
            check_hardware(cfg)
            from rlhfkit.pipeline import run_pipeline, validate_run

            validate_run(cfg)
            _preflight(cfg, cfg.stages)
            with _holding(run_dir, "rlhfkit run", create=resume is None):
                if resume is None:
                    def start() -> None:
                        rundir.clear(run_dir, overwrite)
                        rundir.record_run_config(run_dir, cfg)

                    main_first(start)
                summary = run_pipeline(cfg, run_dir, resume=resume is not None)
    except _user_errors() as err:
        _fail(str(err))
        return
    except OSError as err:
        if not _disk_full(err):
            raise
        _fail_disk_full(err)
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


from rlhfkit.label.cli import app as label_app  # noqa: E402 - sub-commands, after the stage commands

app.add_typer(label_app, name="label")
from rlhfkit.memory.cli import plan as _plan  # noqa: E402  (the command body lives with the planner)

app.command(name="plan")(_plan)


@app.command()
def diagnose(target: Annotated[Path, typer.Argument(help="A run directory, a PPO stage directory or a metrics.jsonl.")]) -> None:
    """The PPO health monitor's rules over an existing metrics.jsonl (rlhfkit's, or any run with the same metric names)."""
    from rich.markup import escape

    from rlhfkit.diagnostics.replay import metrics_file, replay, saved_config
    from rlhfkit.training.progress import console

    try:
        path = metrics_file(target)
        run, config = None, saved_config(path)
        if config is not None:  # its thresholds, and suggestions that read its settings
            try:
                run = load_config(config, [])
            except ConfigError as err:  # e.g. written by another rlhfkit version: the defaults still apply
                console.print(f"[yellow]warning[/] {escape(str(err))}: general thresholds and suggestions",
                              highlight=False, soft_wrap=True)
        iterations, found = replay(path, run.ppo.diagnostics if run else None, run)
    except _user_errors() as err:
        _fail(str(err))
        return
    for diagnostic in found:
        console.print(f"[yellow]warning[/] {escape(str(diagnostic))}", highlight=False)
    console.print(f"{escape(str(path))}: {iterations} iterations, {len(found)} warning(s)", highlight=False)
@app.command("config")
def config_command(
    section: Annotated[Optional[str], typer.Argument(help="A section, e.g. ppo or ppo.kl; empty: every section.")] = None,
) -> None:
    """Every config key with its type, default and description (the same as docs/config.md)."""
    from rlhfkit.config.docs import print_config

    try:
        print_config(section)
    except _user_errors() as err:
        _fail(str(err))


def main() -> None:  # pragma: no cover - console entry point
    world = os.environ.get("WORLD_SIZE", "")  # set by the launchers (training/distributed.py::launched_processes)
    if not (world.isdigit() and int(world) > 1):  # one process: Python's own exit
        app(prog_name="rlhfkit")
        return
    try:
        app(prog_name="rlhfkit")
        code = 0
    except SystemExit as done:  # typer ends every command this way
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    except BaseException:  # an uncaught error must not reach interpreter finalization either
        import traceback

        traceback.print_exc()
        code = 1
    from rlhfkit.training.distributed import exit_launched_process

    exit_launched_process(code)  # not through interpreter finalization (see there why)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
