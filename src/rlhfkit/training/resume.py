"""What resuming needs besides weights: RNG states, the data position, append-only logs cut back
to the checkpoint, a config check, and the marker that says a stage is finished.

- `rng_state()` / `set_rng_state()`: Python, NumPy, torch (CPU and CUDA) and named
  `torch.Generator`s, as plain JSON (generator states are base64 strings, never pickles).
- `DataPosition`: where a shuffled DataLoader is (epoch, micro-batches consumed, the sampler
  generator's state at the epoch's start), so a resumed epoch replays the same order and skips
  what was already trained on.
- `truncate_logs()`: metrics.jsonl and samples.jsonl are append-only; on resume they are cut back
  to their size when the checkpoint was written, so no line is duplicated.
- `fingerprint()` / `check_fingerprint()`: a checkpoint is only resumed with the config that wrote
  it (logging and checkpoint settings may change) and the same data files (sha256).
- `finished_stage()` / `mark_finished()`: `STAGE/done.json` is written after a stage's final
  model, atomically; `--resume` skips a stage that has it and gets its output back from it.
- `clean_stale()`: `*.tmp-<pid>` / `*.old-<pid>` directories left by a killed writer are deleted.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.config.load import ConfigError, dotted_items
from rlhfkit.stages.common import StageOutput

DONE_FILE = "done.json"
STALE = re.compile(r".+\.(tmp|old)-\d+$")
STEP_DIR = re.compile(r"step-\d+(\.tmp-\d+)?")  # a checkpoint directory, complete or torn


# ------------------------------------------------------------------ RNG


def _encode(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def rng_state(generators: Mapping[str, torch.Generator] = {}) -> dict[str, Any]:
    """Every random state a stage draws from, as JSON-serialisable data."""
    version, internal, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [key, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": _encode(torch.get_rng_state()),
        "generators": {name: _encode(g.get_state()) for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_encode(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] = {}) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    key, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_decode(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode(s) for s in state["cuda"]])
    for name, generator in generators.items():
        generator.set_state(_decode(state["generators"][name]))


# ------------------------------------------------------------------ data position


class DataPosition:
    """Epoch and micro-batch position in a DataLoader shuffled by `generator`.

    `for batch in position.batches(loader)` runs one epoch; after `load_state_dict` the first
    epoch restarts from the saved epoch-start generator state (same order) and skips the
    micro-batches already consumed.
    """

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.epoch = 0
        self.consumed = 0
        self._epoch_start: str | None = None
        self._skip = 0

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        if self._skip:
            self.generator.set_state(_decode(self._epoch_start))
        else:
            self._epoch_start, self.consumed = _encode(self.generator.get_state()), 0
        skip, self._skip = self._skip, 0
        for index, batch in enumerate(loader):
            if index < skip:
                continue
            self.consumed = index + 1
            yield batch
        self.epoch += 1
        self.consumed = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "epoch_start": self._epoch_start}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.consumed, self._epoch_start = int(state["epoch"]), int(state["consumed"]), state["epoch_start"]
        self._skip = self.consumed


# ------------------------------------------------------------------ append-only logs


def log_sizes(stage_dir: Path, names: Iterable[str]) -> dict[str, int]:
    """Current byte size of each append-only log (0 when absent)."""
    return {name: (stage_dir / name).stat().st_size if (stage_dir / name).exists() else 0 for name in names}


def truncate_logs(stage_dir: Path, sizes: Mapping[str, int]) -> None:
    """Cut each log back to the size it had when the checkpoint was written."""
    for name, size in sizes.items():
        path = stage_dir / name
        if path.exists() and path.stat().st_size > size:
            os.truncate(path, size)


# ------------------------------------------------------------------ config fingerprint

IGNORED_SECTIONS = ("logging", "checkpoint")
RUN_DIR_TOKEN = "{run_dir}"  # paths inside the run directory are stored relative to it: a moved run resumes


def _portable(value: Any, run_dir: str) -> Any:
    """`value` with every string path inside `run_dir` written as `{run_dir}/rel/path`."""
    if isinstance(value, dict):
        return {k: _portable(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, run_dir) for v in value]
    if isinstance(value, str) and value and ("/" in value or os.sep in value):
        real = os.path.realpath(value)
        if real == run_dir or real.startswith(run_dir + os.sep):
            return os.path.join(RUN_DIR_TOKEN, os.path.relpath(real, run_dir))
    return value


def _data_files(data: Any, prefix: str) -> dict[str, str]:
    """dotted key -> sha256 of every string value naming an existing file (the data a stage reads)."""
    from rlhfkit.training.checkpoint import sha256_file

    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_data_files(value, f"{prefix}.{key}"))
        return out
    if isinstance(data, list):
        return {k: v for i, item in enumerate(data) for k, v in _data_files(item, f"{prefix}[{i}]").items()}
    if isinstance(data, str) and data and os.path.isfile(data):
        return {prefix: sha256_file(Path(data))}
    return {}


def fingerprint(cfg: Any, section: Any, stage_dir: Path) -> dict[str, Any]:
    """Everything a stage's result depends on, which a checkpoint must be resumed with: the stage
    section (less logging and checkpoint settings), seed, device, mixed precision, the bundled
    task's section, and the sha256 of every data file the section names. Paths inside the run
    directory are stored relative to it."""
    name = next(n for n in ("sft", "rm", "ppo") if getattr(cfg, n) is section)
    data = section.model_dump(mode="json")
    for key in IGNORED_SECTIONS:
        data.pop(key, None)
    run_dir = os.path.realpath(Path(stage_dir).parent)
    return {
        "seed": cfg.seed, "device": cfg.device, "mixed_precision": cfg.mixed_precision,
        "task": cfg.task.model_dump(mode="json") if cfg.task is not None else None,
        name: _portable(data, run_dir),
        "sha256": _data_files(data, name),
    }


def _same(a: Any, b: Any) -> bool:
    """Equal, or two spellings of the same path (`runs/x/sft/model` and its absolute form)."""
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and os.path.realpath(a) == os.path.realpath(b)


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], stage: str, where: Path) -> None:
    """ConfigError naming the first key (or data file) that differs from the checkpoint's."""
    a, b = dotted_items(dict(saved)), dotted_items(dict(current))
    for key in sorted(set(a) | set(b)):
        if _same(a.get(key), b.get(key)):
            continue
        if key.startswith("sha256."):
            file_key = key.removeprefix("sha256.")
            raise ConfigError(f"{where}: the data file {file_key} ({b.get(file_key, a.get(file_key))}) changed since this "
                              "checkpoint was written (its sha256 differs); resume with the data it was trained on, or "
                              "start a new run")
        raise ConfigError(f"{where}: was written with {key}={a.get(key)!r}, the config now says {b.get(key)!r}; "
                          "resume with the same config, or start a new run")


# ------------------------------------------------------------------ finished stages and leftovers


def mark_finished(stage_dir: Path, output: StageOutput, *, drop_checkpoints: bool = False) -> None:
    """Write STAGE/done.json (atomically) once the stage's final output is on disk; then, with
    `drop_checkpoints` (`not checkpoint.keep_when_finished`), delete the resumable checkpoints."""
    path = Path(stage_dir) / DONE_FILE
    record = {"checkpoint": os.path.relpath(output.checkpoint, stage_dir), "metrics": output.metrics}
    tmp = path.with_name(f"{DONE_FILE}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, default=float)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    if drop_checkpoints:
        drop_finished_checkpoints(stage_dir)


def drop_finished_checkpoints(stage_dir: Path) -> int:
    """Delete STAGE/checkpoints/step-N (and torn step-N.tmp-*) of a finished stage; returns the bytes freed.

    Only after done.json: a finished stage is never resumed, so the checkpoints only repeat the final
    weights and add the optimizer state (Adam: 2× the weights). Entries rlhfkit did not write stay,
    and so does the directory then."""
    from rlhfkit.training.checkpoint import CHECKPOINTS_DIR

    if not (Path(stage_dir) / DONE_FILE).is_file():
        raise RuntimeError(f"{stage_dir}: not finished, its checkpoints are still needed")
    root = Path(stage_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return 0
    freed = 0
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and STEP_DIR.fullmatch(entry.name):
            freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            shutil.rmtree(entry)
    if not any(root.iterdir()):
        root.rmdir()
    return freed


def finished_output(stage_dir: Path) -> StageOutput | None:
    """The StageOutput of a finished stage (done.json present and its checkpoint there), else None."""
    path = Path(stage_dir) / DONE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    checkpoint = Path(stage_dir) / record["checkpoint"]
    if not checkpoint.is_dir():
        return None
    return StageOutput(checkpoint=checkpoint, metrics=record.get("metrics", {}))


def is_finished(stage_dir: Path) -> bool:
    return finished_output(stage_dir) is not None


def finished_stage(stage_dir: Path, resume: bool) -> StageOutput | None:
    """When resuming, the output of a stage that already finished (announced), else None."""
    done = finished_output(stage_dir) if resume else None
    if done is not None:
        from rlhfkit.training.progress import console

        from rich.markup import escape

        console.print(f"\\[{Path(stage_dir).name}] finished before: using {escape(str(done.checkpoint))}", soft_wrap=True)
    return done


def clean_stale(*dirs: Path) -> list[Path]:
    """Delete `*.tmp-<pid>` / `*.old-<pid>` entries that a killed writer left behind.

    An `X.old-<pid>` whose `X` is missing (killed between the two renames of `atomic_directory`)
    is the last complete copy of X: it is renamed back instead.
    """
    removed = []
    for directory in dirs:
        if not Path(directory).is_dir():
            continue
        for entry in sorted(Path(directory).iterdir()):
            match = STALE.match(entry.name)
            if not match:
                continue
            original = entry.with_name(entry.name[: entry.name.rindex(".")])
            if match.group(1) == "old" and not original.exists():
                os.replace(entry, original)
                continue
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
