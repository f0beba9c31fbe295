"""Whole weights and resumable optimizer state of models that FSDP2 or DeepSpeed has sharded.

Where the shards live, and how each engine's own API gathers and restores them:

| engine      | weights on each process      | optimizer state on each process | gathered with |
|-------------|------------------------------|----------------------------------|---------------|
| DDP / one   | whole                        | whole                            | (nothing)     |
| FSDP2       | a shard of each (DTensor)    | a shard, keyed like the weights  | torch.distributed.checkpoint.state_dict |
| ZeRO-2      | whole (views into flat buffers) | this process's partition      | copied out; partitions per process |
| ZeRO-3      | a partition of each          | this process's partition         | deepspeed.zero.GatheredParameters |

A checkpoint or a saved model needs whole weights: FSDP2's are gathered into ordinary CPU tensors
complete on the main process (`full_state_dict=True, cpu_offload=True`), ZeRO-3's by gathering each
module's parameters for the length of a copy. Both are collectives: every process calls these
functions together, the main process then writes. The optimizer state is stored as FSDP2's whole
state keyed by parameter name (which scatters back into any process's shard), or as DeepSpeed's
partitions, one file per process (which only the same process count can read back; resuming with
another count is refused for every engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

GATHER_ON_MAIN = StateDictOptions(full_state_dict=True, cpu_offload=True)
SCATTER_FULL = StateDictOptions(full_state_dict=True, strict=True)

# trainer_state.json's name for the layout of a checkpoint's optimizer state
OPTIMIZER_BY_POSITION = "by_position"  # optimizer.state_dict() as torch writes it (DDP, one process; older checkpoints)
OPTIMIZER_BY_NAME = "by_name"  # FSDP2: the whole state keyed by parameter name, in optimizer.pt
OPTIMIZER_PER_PROCESS = "per_process"  # DeepSpeed: each process's partition, in optimizer-rank{R}.pt


def _zero_stage(accelerator: Any) -> int | None:
    if accelerator is None or accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return accelerator.state.deepspeed_plugin.zero_stage


def is_fsdp(accelerator: Any) -> bool:
    return accelerator is not None and accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator: Any) -> bool:
    return _zero_stage(accelerator) is not None


def engine_holds_weights(accelerator: Any) -> bool:
    """True when the prepared models' weights are not plain whole tensors to save as they are:
    FSDP2's and ZeRO-3's shards, and ZeRO-2's whole weights, which are views into DeepSpeed's flat
    buffers (safetensors refuses tensors sharing storage)."""
    return is_fsdp(accelerator) or is_deepspeed(accelerator)


def optimizer_layout(accelerator: Any) -> str:
    if is_fsdp(accelerator):
        return OPTIMIZER_BY_NAME
    return OPTIMIZER_PER_PROCESS if is_deepspeed(accelerator) else OPTIMIZER_BY_POSITION


def _raw(optimizer: Any) -> Any:
    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


@contextmanager
def zero3_gathered(module: torch.nn.Module, modifier_rank: int | None = None) -> Iterator[None]:
    """ZeRO-3: `module`'s whole parameters on every process for the block; with `modifier_rank`,
    that process's changes to them are partitioned back on exit."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=modifier_rank):
        yield


def model_state(accelerator: Any, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Whole weights of `module` (a sharded model or any sub-module of one) on the main process, as
    CPU tensors; {} on the others."""
    if is_fsdp(accelerator):
        return get_model_state_dict(module, options=GATHER_ON_MAIN)
    with zero3_gathered(module) if _zero_stage(accelerator) == 3 else nullcontext():
        if not accelerator.is_main_process:
            return {}
        return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}


def load_model_state(accelerator: Any, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every process passes the same whole weights; each keeps its own shard of them."""
    if is_fsdp(accelerator):
        set_model_state_dict(module, state, options=SCATTER_FULL)
        return
    with zero3_gathered(module, modifier_rank=0) if _zero_stage(accelerator) == 3 else nullcontext(), torch.no_grad():
        module.load_state_dict(state, strict=True)


def whole_weights(accelerator: Any, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """What to save for `module`: None when its parameters are whole (save the module as it is), else
    its gathered weights, each tied parameter once under its first name (the embeddings, not the
    LM head tied to them: the file `save_pretrained` writes for an unsharded model). Under FSDP2 and
    ZeRO-3 every process calls it (a collective); the main process saves."""
    if not engine_holds_weights(accelerator):
        return None
    state = model_state(accelerator, module)
    first_name: dict[int, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if first_name.setdefault(id(param), name) != name:
            state.pop(name, None)
    return state


def optimizer_state(accelerator: Any, owner: torch.nn.Module, optimizer: Any) -> Any:
    """What the checkpoint stores for the optimizer, in `optimizer_layout(accelerator)`: FSDP2's whole
    state keyed by parameter name (main process; {} elsewhere; `owner` is the prepared module the
    parameters belong to), DeepSpeed's partition of this process, or `optimizer.state_dict()`."""
    if is_fsdp(accelerator):
        return get_optimizer_state_dict(owner, _raw(optimizer), options=GATHER_ON_MAIN)
    return optimizer.state_dict()


def load_optimizer_state(accelerator: Any, owner: torch.nn.Module, optimizer: Any, state: Any) -> None:
    """The inverse of `optimizer_state`, for a checkpoint written in this launch's layout."""
    if is_fsdp(accelerator):
        set_optimizer_state_dict(owner, _raw(optimizer), state, options=SCATTER_FULL)
    elif is_deepspeed(accelerator):
        # DeepSpeed's ZeRO optimizers take every process's state dict and read their own entry; the
        # fp32 master partition comes from the saved state (exact under bf16 too), not from the weights.
        entries = [None] * accelerator.num_processes
        entries[accelerator.process_index] = state
        _raw(optimizer).load_state_dict(entries, load_from_fp32_weights=True)
    else:
        optimizer.load_state_dict(state)


def deepspeed_safe_globals() -> list[type]:
    """The classes a DeepSpeed optimizer partition holds besides tensors (its loss scaler, ZeRO
    stage and ZeRO-2's parameter-fragment addresses), allowed to `torch.load(weights_only=True)` by
    name — no other Python object may be in it."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
