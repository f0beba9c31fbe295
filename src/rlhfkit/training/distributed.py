"""The few cross-process operations rlhfkit needs, over accelerate's process group.

One process (no launcher) is the degenerate case of every function here: sums are the identity,
the main process is the only process, broadcasting returns the value. With `accelerate launch`
or `torchrun`, accelerate's `PartialState` reads the launcher's environment and owns the process
group (NCCL on GPUs, gloo on CPUs); nothing here creates one of its own.

- `Collectives`: all-reduce sums and "did any process…" flags for statistics that must be global
  (advantage whitening, logged means, the NaN/Inf verdict, a stop signal), timed, so the share of
  an iteration spent waiting on other processes can be logged.
- `main_first(fn)`: the main process runs `fn` (make a directory, build a dataset, check a path),
  the others wait and get its result — or the same error, so every process exits with the same
  code instead of one waiting forever in a collective.
- `policy_for_generation(accelerator, actor_critic)`: the policy with its full weights for
  `generate()` — FSDP2 and ZeRO-3 shard parameters, so they are gathered for the rollout (as the
  peers do) and dropped again after it.
- `launched_processes()`: what the launcher asked for, to warn when fewer processes started.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, broadcast_object_list

T = TypeVar("T")


def no_accelerator() -> bool:
    """No CUDA and no MPS device: processes talk over gloo on the CPU."""
    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def deepspeed_launch() -> bool:
    """The launcher asked for DeepSpeed (`accelerate launch --config_file configs/accelerate/zero2.yaml`)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"


def cpu_accelerator() -> bool:
    """What to tell `Accelerator(cpu=…)`: no CUDA or MPS device, and no DeepSpeed launch. accelerate
    runs DeepSpeed only when not told `cpu`; DeepSpeed then uses its own CPU accelerator, over the
    gloo process group `state()` has already joined."""
    return no_accelerator() and not deepspeed_launch()


def state() -> PartialState:
    # accelerate sets up a CPU process group (gloo) only when asked for the CPU explicitly; without
    # it a launched process on a machine without GPUs silently runs alone (world size 1).
    return PartialState(cpu=no_accelerator())


def is_main_process() -> bool:
    return state().is_main_process


def rank() -> int:
    return state().process_index


def world_size() -> int:
    return state().num_processes


def barrier() -> None:
    state().wait_for_everyone()


def broadcast(value: T) -> T:
    """The main process's `value` on every process (pickled between our own processes)."""
    if world_size() == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


class _Failure:
    """An exception raised by the main process in `main_first`, as data the others can re-raise."""

    def __init__(self, err: BaseException):
        self.kind, self.message = type(err), str(err)


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on the main process only; every process returns its result or raises its error."""
    if world_size() == 1:
        return fn()
    outcome: Any = None
    error: BaseException | None = None
    if is_main_process():
        try:
            outcome = fn()
        except Exception as err:  # re-raised below on this process, and as its type on the others
            error, outcome = err, _Failure(err)
    outcome = broadcast(outcome)
    if error is not None:
        raise error
    if isinstance(outcome, _Failure):
        try:
            error = outcome.kind(outcome.message)
        except TypeError:  # a class that needs other arguments (DataError: file, line, field): still a user error
            from rlhfkit.config.load import ConfigError

            error = ConfigError(outcome.message)
        raise error
    return outcome


class Collectives:
    """Sums and flags across the data-parallel processes of one accelerator; seconds spent counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.world_size = world_size()
        self.seconds = 0.0

    def _all_reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        start = time.perf_counter()
        out = tensor.detach().clone()
        torch.distributed.all_reduce(out, op=op)
        self.seconds += time.perf_counter() - start
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Σ over processes (a new tensor; the identity in one process)."""
        return self._all_reduce(tensor, torch.distributed.ReduceOp.SUM if self.world_size > 1 else None)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, torch.distributed.ReduceOp.MAX if self.world_size > 1 else None)

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on any of them."""
        return bool(self.max(torch.tensor(float(flag), device=self.device)).item())

    def take_seconds(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


@contextmanager
def policy_for_generation(accelerator, actor_critic) -> Iterator[torch.nn.Module]:
    """The unwrapped policy, its full weights present while the block runs (see module docstring)."""
    policy = accelerator.unwrap_model(actor_critic).policy
    if accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        from rlhfkit.training.sharded import zero3_gathered

        with zero3_gathered(policy):  # whole on every process for the rollout, partitioned again after
            yield policy
    elif accelerator.distributed_type == DistributedType.FSDP:  # FSDP2 (check_sharding refuses FSDP1)
        # Gather every shard unit once for the whole rollout: left to its hooks, each block would be
        # gathered and freed again at every decoding step. reshard() frees them after.
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in actor_critic.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield policy
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(accelerator.state.fsdp_plugin.reshard_after_forward, recurse=False)
    else:
        yield policy


def launched_processes() -> int | None:
    """How many processes the launcher meant to start (WORLD_SIZE), None without a launcher."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value and value.isdigit() else None


def processes_asked_of_accelerate() -> int | None:
    """N when the parent process is `accelerate launch --num_processes N …` (Linux /proc).

    accelerate's plain launcher — taken when neither --multi_gpu nor a distributed config is given,
    e.g. on a machine without GPUs — starts ONE process whatever N says, and leaves no trace of N
    in the environment; the launcher's command line still has it."""
    try:
        args = [a.decode(errors="replace") for a in
                open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\0") if a]
    except OSError:
        return None
    if not any(a.endswith("accelerate") for a in args[:2]) or "launch" not in args:
        return None
    for i, arg in enumerate(args):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and i + 1 < len(args) and args[i + 1].isdigit():
                return int(args[i + 1])
            if arg.startswith(flag + "=") and arg.split("=", 1)[1].isdigit():
                return int(arg.split("=", 1)[1])
    return None


_warned_sharding = False


def check_sharding(accelerator, lora: bool) -> None:
    """Refuse, in one line, the sharded set-ups whose checkpoints and saved models rlhfkit cannot
    write whole: FSDP1 (flat parameters; FSDP2's are gathered, training/sharded.py), and LoRA under
    FSDP or DeepSpeed (the adapters would be merged into weights the engine holds)."""
    from rlhfkit.config.load import ConfigError

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError("FSDP version 1 is not supported: set fsdp_version: 2 in the accelerate config "
                          "(configs/accelerate/fsdp.yaml)")
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if lora and (fsdp or deepspeed):
        raise ConfigError(f"LoRA under {'FSDP' if fsdp else 'DeepSpeed'} is not supported (the adapters would be merged "
                          "into weights the engine holds in shards or flat buffers): LoRA models are small, launch "
                          "with DDP (configs/accelerate/ddp.yaml)")


def load_models_whole(accelerator) -> None:
    """ZeRO-3: accelerate registers its DeepSpeed config with transformers, which then partitions
    every model `from_pretrained` loads (deepspeed.zero.Init) — the frozen reference and reward
    models too, which no engine would then gather, and a fresh score head would be initialised on a
    partition. rlhfkit unregisters it: models load whole, `prepare` partitions the trained ones, and
    the frozen ones stay replicated (as under FSDP2). The cost: each process holds a whole model in
    host memory while loading."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def configure_deepspeed(accelerator, micro_batch: int, accumulation: int, max_grad_norm: float | None) -> None:
    """DeepSpeed takes the batch shape and clipping from its own config, not from the training loop:
    set them from rlhfkit's (before `prepare`). Its engine clips all trained parameters together."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = accumulation
    config["train_batch_size"] = micro_batch * accumulation * accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm or 0.0  # 0: DeepSpeed does not clip


FSDP_ON_CPU_ENV = "RLHFKIT_FSDP_ON_CPU"


def fsdp_on_cpu(accelerator) -> bool:
    """Testing aid: with RLHFKIT_FSDP_ON_CPU=1 under an FSDP launch config on a machine without GPUs,
    switch the accelerator to FSDP before any model is prepared. accelerate enables FSDP only on
    accelerators, while torch's FSDP2 runs on the CPU over gloo; so the tests run accelerate's and
    torch's real FSDP2 code (sharding, gathering, clipping) on 2 CPU processes. True when switched."""
    if (os.environ.get(FSDP_ON_CPU_ENV) != "1" or os.environ.get("ACCELERATE_USE_FSDP", "").lower() != "true"
            or accelerator.distributed_type != DistributedType.MULTI_CPU):
        return False
    from accelerate.utils import FullyShardedDataParallelPlugin

    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the launcher's FSDP_* variables
    # PartialState too: every AcceleratorState() accelerate builds later copies its distributed type
    state().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    return True


def warn_if_sharding_was_dropped(accelerator) -> None:
    """accelerate runs an FSDP or DeepSpeed launch config as plain DDP on CPUs, without a word."""
    global _warned_sharding
    asked = [name for name, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(env, "").lower() == "true"]
    if _warned_sharding or not asked or accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return
    from rlhfkit.training.progress import console

    _warned_sharding = True
    console.print(f"[yellow]warning[/] the launcher asked for {asked[0]}, but accelerate runs "
                  f"{accelerator.distributed_type.value} here (sharding needs GPUs): the models are replicated, "
                  "not sharded", highlight=False, soft_wrap=True)


def _leave_process_group() -> None:
    """Leave the process group while the interpreter is still whole (torch's documented shutdown).
    Local to this process, not a collective."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_launched_process(code: int) -> NoReturn:
    """End a process of a multi-process launch: join Python's own threads, run the exit handlers
    (trackers closed, streams flushed; the process group left only after a success), then exit
    without interpreter finalization. DistributedDataParallel keeps a reference to the gloo process
    group in C++ that `destroy_process_group` cannot drop (checked with torch 2.13: gloo's threads
    outlive it), and tearing those threads down during finalization at times aborted a finished
    run's main process ("terminate called without an active exception", exit -6; 2 of 11
    two-process `run --quick` launches here; pytorch/pytorch PR 179291 describes the same crash).
    After a failure the group is not left: with NCCL that can be a collective (ncclCommAbort), and a
    failed process waiting in it for peers that wait elsewhere would hang the job instead of ending
    it (the launcher stops the others when one exits)."""
    if code != 0:
        atexit.unregister(_leave_process_group)
    threading._shutdown()  # what interpreter shutdown does first: non-daemon threads, executor workers
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or a broken pipe: nothing more can be said on it
            pass
    os._exit(code)


def start_processes() -> None:
    """Join the launcher's process group (if any) before anything else runs; quiet every console but
    the main process's; warn when a launcher was asked for N processes but one started."""
    from rlhfkit.training.progress import console

    launched = launched_processes()
    if launched is not None and launched > 1:
        atexit.register(_leave_process_group)
        if not is_main_process():
            console.quiet = True  # one voice: the main process prints progress, summaries and errors
        return
    asked = processes_asked_of_accelerate()
    if asked is not None and asked > 1:
        console.print(f"[yellow]warning[/] accelerate launch was asked for {asked} processes but started one: "
                      "on a machine without GPUs add --multi_gpu (it then uses gloo on the CPU), "
                      f"or use torchrun --nproc_per_node {asked} -m rlhfkit.cli …", highlight=False, soft_wrap=True)


__all__ = ["Collectives", "FSDP_ON_CPU_ENV", "barrier", "check_sharding", "configure_deepspeed", "cpu_accelerator", "deepspeed_launch", "exit_launched_process", "fsdp_on_cpu", "load_models_whole", "broadcast", "is_main_process", "launched_processes", "main_first", "policy_for_generation", "processes_asked_of_accelerate", "start_processes", "rank",
           "state", "world_size"]
