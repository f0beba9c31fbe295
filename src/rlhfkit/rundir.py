"""The run directory: which directories rlhfkit may create, replace or continue, and who holds one.

- **Marker.** Every run directory rlhfkit creates (or finds empty and adopts) gets `.rlhfkit-run`,
  a small JSON file. `--overwrite` only ever removes a directory that carries it and holds nothing
  but names rlhfkit writes (`RUN_NAMES`); it never removes `.`, `~`, `/`, the home directory or a
  directory the working directory is inside. Anything else is refused, naming what is in the way:
  rlhfkit never deletes a file it did not write.
- **Lock.** A command holds an exclusive lock on `RUN_DIR/.rlhfkit.lock` (the `filelock` package,
  an OS-level lock released even when the holder is SIGKILLed) for as long as it runs, so a second
  `run`, stage or `--resume` into the same directory stops at once with one line naming the
  holder's pid, instead of interleaving the two runs' metrics files.
- **Config.** `rlhfkit run` records the config it started with in the marker; `--resume` refuses a
  config that differs from it (`check_run_config`) before any stage, so an edited `task:` section
  cannot rewrite the task's data files under finished stages.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlhfkit.config.load import ConfigError, dotted_items

MARKER = ".rlhfkit-run"
LOCK = ".rlhfkit.lock"
OWNER = ".rlhfkit.lock.owner"  # pid of the holder; a separate file because acquiring truncates the lock file
OWN_FILES = (MARKER, LOCK, OWNER)

# Top-level names rlhfkit writes into a run directory (pipeline.py, cli.py, report/), with the
# `.tmp`/`.tmp-<pid>`/`.old-<pid>` forms of its atomic writes.
RUN_NAMES = re.compile(
    r"(config\.yaml|(sft|rm|ppo)_config\.yaml|summary\.json|report\.html|plots|task|sft|rm(-\d+)?|ppo|eval|mlruns)"
    r"(\.tmp(-\d+)?|\.old-\d+|\.json\.tmp)?"
)
IGNORED_KEYS = ("output_dir",)  # the run directory itself may move
IGNORED_PARTS = ("logging", "checkpoint")  # may change on --resume (README)


def _contents(run_dir: Path) -> list[str]:
    """Names in `run_dir` other than rlhfkit's own marker and lock files."""
    return sorted(p.name for p in run_dir.iterdir() if p.name not in OWN_FILES)


def _forbidden(run_dir: Path) -> str | None:
    """Why `run_dir` may never be removed (None when it may be, contents permitting)."""
    target, cwd, home = run_dir.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if target == Path(target.anchor):
        return "it is the filesystem root"
    if target == home:
        return "it is your home directory"
    if target == cwd or target in cwd.parents:
        return "the working directory is inside it"
    return None


def check_target(run_dir: Path, option: str = "output_dir") -> None:
    """Refuse a run directory that is a file or sits below one."""
    for path in (run_dir, *run_dir.parents):
        if path.exists() and not path.is_dir():
            what = "is a file" if path == run_dir else f"cannot be created: {path} is a file"
            raise ConfigError(f"{option} {run_dir} {what}, not a directory: choose another --output-dir")


def _refuse_removal(run_dir: Path, what: str) -> None:
    """ConfigError unless `run_dir` (or its stage `what`) is one rlhfkit wrote and may replace."""
    why = _forbidden(run_dir)
    if why is None and not (run_dir / MARKER).is_file():
        why = f"it has no {MARKER} marker, so rlhfkit did not create it"
    if why is None and what == "run":
        foreign = [name for name in _contents(run_dir) if not RUN_NAMES.fullmatch(name)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            why = f"it holds files rlhfkit did not write ({shown})"
    if why is not None:
        target = run_dir if what == "run" else run_dir / what
        raise ConfigError(f"--overwrite refuses to delete {target}: {why}; remove it yourself or choose another --output-dir")


def check_fresh(run_dir: Path, overwrite: bool, stage: str | None = None) -> None:
    """Before any work: refuse a run (or stage) directory that is in the way, unless --overwrite may
    remove it. Read-only; `clear` repeats the check under the lock and removes."""
    check_target(run_dir)
    target = run_dir / stage if stage else run_dir
    if not target.is_dir() or not _contents(target):
        return
    if not overwrite:
        raise ConfigError(f"{target} already exists: pass --overwrite to replace it, --resume to continue it, "
                          "or choose --output-dir")
    _refuse_removal(run_dir, stage or "run")


def clear(run_dir: Path, overwrite: bool, stage: str | None = None) -> None:
    """Remove what --overwrite replaces (the whole run, or one stage); the lock must be held."""
    check_fresh(run_dir, overwrite, stage)
    if stage:
        if (run_dir / stage).exists():
            shutil.rmtree(run_dir / stage)
        return
    for name in _contents(run_dir):
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


# ------------------------------------------------------------------ marker and lock


def _write_marker(run_dir: Path, record: Mapping[str, Any]) -> None:
    tmp = run_dir / f"{MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / MARKER)


def _read_marker(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _holder(run_dir: Path) -> str:
    try:
        owner = json.loads((run_dir / OWNER).read_text(encoding="utf-8"))
        return f"pid {owner['pid']}, `{owner['command']}`, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


@contextmanager
def holding(run_dir: Path, command: str, create: bool) -> Iterator[Path]:
    """Hold the run directory's lock for the block; with `create`, make the directory (and its
    marker when it is new or empty) first. A directory locked by another process: ConfigError."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    if create:
        check_target(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"output_dir {run_dir}: cannot create it: {err.strerror or err}") from None
        if not (run_dir / MARKER).exists() and not _contents(run_dir):
            _write_marker(run_dir, {"created_by": "rlhfkit", "created": _dt.datetime.now().isoformat(timespec="seconds")})
    lock = FileLock(str(run_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{run_dir} is in use by another rlhfkit process ({_holder(run_dir)}): wait for it to end "
                          "or stop it; two runs in one directory would mix their files") from None
    except OSError as err:
        raise ConfigError(f"{run_dir}: cannot lock it: {err.strerror or err}") from None
    try:
        since = _dt.datetime.now().isoformat(timespec="seconds")
        (run_dir / OWNER).write_text(json.dumps({"pid": os.getpid(), "command": command, "since": since}), encoding="utf-8")
        yield run_dir
    finally:
        (run_dir / OWNER).unlink(missing_ok=True)
        lock.release()


# ------------------------------------------------------------------ the config a run started with


def _compared(cfg: Any) -> dict[str, Any]:
    flat = dotted_items(cfg.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if k not in IGNORED_KEYS and not set(k.split(".")) & set(IGNORED_PARTS)}


def record_run_config(run_dir: Path, cfg: Any) -> None:
    """Store the config `rlhfkit run` starts with in the marker (for `check_run_config`)."""
    _write_marker(run_dir, {**_read_marker(run_dir), "config": _compared(cfg)})


def check_run_config(run_dir: Path, cfg: Any) -> None:
    """ConfigError naming the first key that differs from the config the run started with.

    A value that was empty at the start (None, []) is one the pipeline fills in (a previous stage's
    checkpoint, the task's data); the resolved config.yaml written at the end holds it, so it is
    not compared. Runs from before this record (no config in the marker) are not checked here."""
    started = _read_marker(run_dir).get("config")
    if not isinstance(started, dict):
        return
    now = _compared(cfg)
    for key in sorted(set(started) | set(now)):
        before, after = started.get(key), now.get(key)
        if before in (None, []) or before == after:
            continue
        raise ConfigError(f"{run_dir}: the run started with {key}={before!r}, the config now says {after!r}; "
                          "--resume continues a run with the config it started with (only logging and checkpoint "
                          "settings may change): undo the change, or start a new run")
