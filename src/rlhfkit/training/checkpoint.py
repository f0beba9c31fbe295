"""Atomic directory writes: nothing that looks like a finished checkpoint unless it is one.

Everything is written into `<final>.tmp-<pid>`, files are fsync'ed, then the directory is
renamed onto `<final>` in one `os.replace`. A crash (even SIGKILL) at any moment leaves either
the previous complete directory or a `.tmp-*` directory that no loader ever reads.

`Checkpointer` (below) builds resumable training checkpoints on top of it; the layout is
described next to it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from rlhfkit.config.load import ConfigError
from rlhfkit.training.sharded import (
    OPTIMIZER_BY_POSITION,
    OPTIMIZER_PER_PROCESS,
    deepspeed_safe_globals,
    engine_holds_weights,
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_layout,
    optimizer_state,
)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename into it) durable; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFullError(OSError):
    """A write ran out of space; the message names the directory and roughly what it needs."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28] " prefix
        return str(self.strerror)


_DISK_FULL_TEXT = ("no space left on device", "unexpected pos", "storagefull", "os error 28", "disk quota exceeded")


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, also as torch.save reports it (`RuntimeError: ... unexpected pos N vs M`) and
    safetensors (`IoError(Os { code: 28, kind: StorageFull })`)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(err).lower() for text in _DISK_FULL_TEXT)


def _no_room_left(final_dir: Path, err: BaseException, needed: int) -> bool:
    """A write error (torch.save also says just `basic_ios::clear: iostream error`) while the
    filesystem has less room left than the write needed: the disk is full."""
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(final_dir.parent).free < max(needed, 1)
    except OSError:
        return False


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def disk_full_error(final_dir: Path, needed: int) -> DiskFullError:
    try:
        free = f", {_megabytes(shutil.disk_usage(final_dir.parent).free)} free there"
    except OSError:
        free = ""
    return DiskFullError(errno.ENOSPC, f"no space left on device writing {final_dir} (it needs about "
                                       f"{_megabytes(needed)}{free}); nothing half-written was kept: free some space, "
                                       "then continue with --resume")


def tensor_bytes(*objects: Any) -> int:
    """Bytes of every tensor in modules / state dicts (nested), to say how much a save needs."""
    total = 0
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, torch.nn.Module):
            stack.extend(obj.state_dict().values())
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return total


@contextmanager
def atomic_directory(final_dir: Path, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `final_dir` atomically. Running out of
    space while writing raises DiskFullError (about `expected_bytes` needed) with nothing left behind."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(f"{final_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final_dir.exists():
            # Keep the old copy until the new one is in place: rename old aside, new in, drop old.
            old = final_dir.with_name(f"{final_dir.name}.old-{os.getpid()}")
            os.replace(final_dir, old)
            os.replace(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final_dir)
        _fsync_dir(final_dir.parent)
    except BaseException as err:
        written = _tree_bytes(tmp) if tmp.exists() else 0
        full = isinstance(err, Exception) and not isinstance(err, DiskFullError) and (
            is_disk_full(err) or _no_room_left(final_dir, err, max(expected_bytes, written)))
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(final_dir, max(expected_bytes, written)) from None
        raise


# =========================================================================== resumable checkpoints
#
# STAGE/checkpoints/step-00000040/     one per save, written with atomic_directory
#     <model>.safetensors              weights of each trained model (policy, value_model / model)
#     optimizer.pt                     optimizer.state_dict(), read back with torch.load(weights_only=True);
#                                      under FSDP2 the whole state keyed by parameter name; under
#     optimizer-rank{R}.pt             DeepSpeed one partition per process instead (sharded.py)
#     trainer_state.json               step, config fingerprint, scheduler, RNG states (Python, NumPy,
#                                      torch, CUDA, named generators — one set per process in a
#                                      data-parallel run), data position, KL controller,
#                                      monitor, early stopper, fault counter, loop counters, log sizes
#     manifest.json                    written last: every file, its size and its sha256
#
# Loading takes the newest directory whose manifest matches the files on disk (sizes to list them,
# sha256 before loading one); a checkpoint whose contents do not match, or that fails to load, is
# warned about, renamed to `step-N.corrupt`, and the previous complete one is loaded instead.
# `.tmp-*` directories (a writer killed mid-save) are never read and are deleted when a run resumes.

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
OPTIMIZER_FILE = "optimizer.pt"
PAUSE_ENV = "RLHFKIT_CHECKPOINT_PAUSE"  # testing aid: pause mid-write of the checkpoint of this step


def _per_process_file(rank: int) -> str:
    return f"optimizer-rank{rank}.pt"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith("step-") or not name[5:].isdigit():
        return None
    return int(name[5:])


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB chunks (checkpoints can be many GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _manifest_files(path: Path) -> dict[str, dict[str, Any]]:
    """name -> {"size", "sha256"?}; manifests written before hashes were added list sizes only."""
    files = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    return {name: entry if isinstance(entry, dict) else {"size": entry} for name, entry in files.items()}


def is_complete(path: Path) -> bool:
    """True when the manifest is there and every file it lists has the listed size."""
    try:
        return all((path / name).stat().st_size == entry["size"] for name, entry in _manifest_files(path).items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


_UNREADABLE = "unreadable: "  # _try_load's prefix for a checkpoint that is intact but cannot be read here


def corruption(path: Path) -> str | None:
    """The first file of a complete checkpoint whose sha256 differs from its manifest's, or None."""
    for name, entry in _manifest_files(path).items():
        if "sha256" in entry and sha256_file(path / name) != entry["sha256"]:
            return f"{name} does not match the sha256 in its manifest"
    return None


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not Path(root).is_dir():
        return []
    found = [(step, p) for p in Path(root).iterdir() if p.is_dir() and (step := _step_of(p)) is not None]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _pause_if_asked(step: int, tmp: Path) -> None:
    """Testing aid (RLHFKIT_CHECKPOINT_PAUSE=STEP): stop half-way through writing a checkpoint so a
    test can SIGKILL the process there. Writes `tmp/PAUSED` and sleeps."""
    if os.environ.get(PAUSE_ENV) == str(step):
        (tmp / "PAUSED").write_text(str(os.getpid()))
        time.sleep(600)


class Checkpointer:
    """Saves and restores everything a stage needs to continue exactly where it stopped.

    models: name -> module (weights, safetensors); optimizer, scheduler: their state dicts (under FSDP2
    or DeepSpeed the weights are copied out through the engine first, training/sharded.py, with
    `owner` the prepared module holding the optimizer's parameters);
    generators: name -> torch.Generator; stateful: name -> object with state_dict() /
    load_state_dict() returning JSON data (None entries are skipped); logs: append-only files in
    the stage directory, cut back to their checkpoint-time size on resume.
    """

    def __init__(self, stage_dir: Path, cfg: Any, *, stage: str, fingerprint: dict[str, Any],
                 models: dict[str, Any], optimizer: Any, scheduler: Any,
                 generators: dict[str, Any] | None = None, stateful: dict[str, Any] | None = None,
                 logs: tuple[str, ...] = ("metrics.jsonl",), accelerator: Any = None, unit: str = "step",
                 owner: Any = None):
        self.stage_dir, self.cfg, self.stage, self.unit = Path(stage_dir), cfg, stage, unit
        self.owner = owner  # the prepared module the optimizer's parameters belong to (its names key a sharded optimizer state)
        self.root = self.stage_dir / CHECKPOINTS_DIR
        self.fingerprint = fingerprint
        self.models, self.optimizer, self.scheduler = models, optimizer, scheduler
        self.generators = generators or {}
        self.stateful = {k: v for k, v in (stateful or {}).items() if v is not None}
        self.logs, self.accelerator = logs, accelerator
        self.last_saved: Path | None = None

    def _unwrap(self, model: Any) -> Any:
        return self.accelerator.unwrap_model(model) if self.accelerator is not None else model

    @property
    def _main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    # ------------------------------------------------------------------ save
    def save(self, step: int, extra: dict[str, Any]) -> Path:
        """Write checkpoint `step` atomically, then delete all but the newest `keep_last`."""
        from safetensors.torch import save_file, save_model

        from rlhfkit.training.distributed import main_first
        from rlhfkit.training.resume import log_sizes, rng_state

        final = self.root / step_dir_name(step)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        rngs = self._gather(rng_state(self.generators))  # every process's own streams (sampling differs per rank)
        copied, layout = engine_holds_weights(self.accelerator), optimizer_layout(self.accelerator)
        # copying weights out of FSDP2 / ZeRO-3 shards is a collective: every process, before the main process writes
        weights = {name: model_state(self.accelerator, self._unwrap(m)) for name, m in self.models.items()} if copied else {}
        optimizer = optimizer_state(self.accelerator, self.owner, self.optimizer)
        if layout == OPTIMIZER_PER_PROCESS:
            optimizer = self._gather_on_main(optimizer)  # every process's partition, in rank order

        def write() -> None:  # the main process writes; an error in it reaches every process (main_first)
            state = {
                "stage": self.stage, "step": step, "config": self.fingerprint,
                "scheduler": self.scheduler.state_dict(),
                "rng": rngs[0], "rng_per_process": rngs,
                "state": {name: obj.state_dict() for name, obj in self.stateful.items()},
                "logs": log_sizes(self.stage_dir, self.logs),
                "optimizer_layout": layout,
                "extra": extra,
            }
            needed = tensor_bytes(*(weights.values() if copied else self.models.values()), optimizer)
            with atomic_directory(final, expected_bytes=needed) as tmp:
                for name, model in self.models.items():
                    if copied:
                        save_file(weights[name], str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
                    else:
                        save_model(self._unwrap(model), str(tmp / f"{name}.safetensors"))
                _pause_if_asked(step, tmp)
                if layout == OPTIMIZER_PER_PROCESS:
                    for rank, partition in enumerate(optimizer):
                        torch.save(partition, tmp / _per_process_file(rank))
                else:
                    torch.save(optimizer, tmp / OPTIMIZER_FILE)
                (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
                files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
                (tmp / MANIFEST_FILE).write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")
            for old in list_checkpoints(self.root)[: -self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)

        main_first(write)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        self.last_saved = final
        return final

    def _gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order (a one-element list in one process)."""
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def _gather_on_main(self, value: Any) -> list[Any] | None:
        """`value` from every process, in rank order, on the main process only (None elsewhere)."""
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return [value]
        received = [None] * self.accelerator.num_processes if self._main else None
        torch.distributed.gather_object(value, received, dst=0)
        return received

    def _stop_signal(self) -> int | None:
        """The pending SIGINT/SIGTERM of any process: every process stops at the same step, or none does
        (one stopping alone would leave the others waiting in the next collective)."""
        from rlhfkit.training.signals import stop_requested

        signum = stop_requested()
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return signum
        flag = torch.tensor(float(signum or 0), device=self.accelerator.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def safe_point(self, step: int, extra: dict[str, Any], final: bool = False, healthy: bool = True) -> None:
        """End of a step: save when due (every `save_every` steps unless the last update was skipped
        for NaN/Inf, at the end, on a signal); then, if a signal asked to stop, raise TrainingInterrupted."""
        from rlhfkit.training.signals import TrainingInterrupted, signal_name

        signum = self._stop_signal()
        every = self.cfg.save_every
        if final or signum is not None or (healthy and every and step % every == 0):
            self.save(step, extra)
        if signum is not None:
            raise TrainingInterrupted(
                signum, f"{signal_name(signum)}: {self.stage} stopped after {self.unit} {step}, checkpoint saved to "
                        f"{self.last_saved}", self.last_saved)

    # ------------------------------------------------------------------ restore
    def restore(self) -> dict[str, Any] | None:
        """Load the newest complete, uncorrupted checkpoint into every registered object.

        Returns {"step": N, **extra} (what `save` was given), or None when there is no checkpoint
        (the stage then starts afresh: its logs are emptied so nothing is duplicated). A checkpoint
        that fails its sha256 check or fails to load is warned about and the previous one is tried."""
        from rlhfkit.training.progress import console
        from rlhfkit.training.resume import clean_stale, truncate_logs

        if self._main:
            clean_stale(self.stage_dir, self.root)
        self._barrier()
        for path in reversed(list_checkpoints(self.root)):
            # every process loads the same checkpoint: a problem any of them meets rules it out for all
            problem = next((p for p in self._gather(self._try_load(path)) if p is not None), None)
            if problem is not None and problem.startswith(_UNREADABLE):  # every checkpoint would say the same
                raise ConfigError(f"{path}: {problem.removeprefix(_UNREADABLE)}; written by another torch or "
                                  "DeepSpeed version? The checkpoints are left as they are: resume with the versions "
                                  "that wrote them")
            if problem is None:
                state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
                if self._main:
                    truncate_logs(self.stage_dir, state["logs"])
                self._barrier()
                self.last_saved = path
                console.print(f"\\[{self.stage}] resuming from {escape(str(path))} ({self.unit} {state['step']})",
                              soft_wrap=True)
                return {"step": int(state["step"]), **state["extra"]}
            if self._main:
                aside = path.with_name(f"{path.name}.corrupt")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(path, aside)
                console.print(f"[yellow]warning[/] \\[{self.stage}] checkpoint {escape(str(path))} is corrupt "
                              f"({escape(problem)}): moved to {escape(aside.name)}, trying the previous one",
                              highlight=False, soft_wrap=True)
            self._barrier()
        if self._main:
            truncate_logs(self.stage_dir, {name: 0 for name in self.logs})
        console.print(f"\\[{self.stage}] no complete checkpoint in {escape(str(self.root))}: starting the stage afresh",
                      soft_wrap=True)
        return None

    def _barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def _try_load(self, path: Path) -> str | None:
        """Load checkpoint `path` into every registered object; what is wrong with it, or None.
        A config that differs from the checkpoint's raises ConfigError (that is no corruption)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, load_model

        from rlhfkit.training.resume import check_fingerprint, set_rng_state

        if (problem := corruption(path)) is not None:
            return problem
        try:
            state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return f"{STATE_FILE}: {err}"
        check_fingerprint(state["config"], self.fingerprint, self.stage, path)
        rank, world = (0, 1) if self.accelerator is None else (self.accelerator.process_index, self.accelerator.num_processes)
        per_process = state.get("rng_per_process", [state.get("rng")])
        if len(per_process) != world:  # not corruption: the launch differs from the one that wrote it
            raise ConfigError(f"{path} was written by {len(per_process)} process(es); resume it with the same number "
                              f"(this launch has {world})")
        copied, layout = engine_holds_weights(self.accelerator), optimizer_layout(self.accelerator)
        written = state.get("optimizer_layout", OPTIMIZER_BY_POSITION)
        if written != layout:  # another engine's optimizer state does not split into this launch's shards
            raise ConfigError(f"{path} was written under another distributed engine ({written} optimizer state, this "
                              f"launch needs {layout}): resume it under the launch config that wrote it")
        try:
            for name, model in self.models.items():
                if copied:  # every process reads the whole weights and keeps its shard
                    load_model_state(self.accelerator, self._unwrap(model), load_file(str(path / f"{name}.safetensors")))
                else:
                    load_model(self._unwrap(model), str(path / f"{name}.safetensors"), strict=True)
            if layout == OPTIMIZER_PER_PROCESS:
                with torch.serialization.safe_globals(deepspeed_safe_globals()):
                    optimizer = torch.load(path / _per_process_file(rank), map_location="cpu", weights_only=True)
            else:
                optimizer = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
            load_optimizer_state(self.accelerator, self.owner, self.optimizer, optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
            for name, obj in self.stateful.items():
                obj.load_state_dict(state["state"][name])
            set_rng_state(per_process[rank], self.generators)
        except pickle.UnpicklingError as err:  # weights_only refused a type the pickle holds: the files passed
            # their sha256 check, so this is no damage but a version mismatch (or a file written by someone else)
            return f"{_UNREADABLE}the optimizer state holds what torch.load(weights_only=True) refuses " \
                   f"({str(err).splitlines()[0] if str(err) else 'UnpicklingError'})"
        except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError, EOFError) as err:
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return None
