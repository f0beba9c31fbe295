"""Whole weights and optimizer state of a model that FSDP has sharded.

Under FSDP2 every process holds one shard of every parameter (a DTensor). A checkpoint or a saved
model needs whole tensors, and resuming needs each process's shard back. torch's
`torch.distributed.checkpoint.state_dict` API does both: `full_state_dict=True, cpu_offload=True`
gathers the shards into ordinary CPU tensors, complete on the main process (an empty dict on the
others), and loading a full dict scatters it back into the shards. These are collectives: under
FSDP every process calls them together, the main process then writes.

The checkpoint layout stays the one `training/checkpoint.py` describes — safetensors weights,
`optimizer.pt` — so a checkpoint from a sharded run is one directory of whole tensors, the same at
any world size. The optimizer state is keyed by parameter name (`policy.transformer.h.0…`), not by
position, which is what lets it be scattered back into another process's shard.

Without FSDP (one process, DDP) the callers keep using the plain `state_dict()`.
"""

from __future__ import annotations

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

# trainer_state.json's name for the optimizer file's layout: written by `optimizer_state` below
# ("by_name") or by `optimizer.state_dict()` (positions; the default, and what older checkpoints hold).
OPTIMIZER_BY_NAME = "by_name"


def is_sharded(accelerator: Any) -> bool:
    """True when the prepared models hold shards, not whole parameters."""
    return accelerator is not None and accelerator.distributed_type == DistributedType.FSDP


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


def model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Whole weights of `module` (any sub-module of a sharded model) on the main process; {} elsewhere."""
    return get_model_state_dict(module, options=GATHER_ON_MAIN)


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every process passes the same whole weights; each keeps its own shard of them."""
    set_model_state_dict(module, state, options=SCATTER_FULL)


def optimizer_state(owner: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's whole state keyed by parameter name (main process; {} elsewhere). `owner` is the
    prepared module the optimizer's parameters belong to."""
    return get_optimizer_state_dict(owner, _raw(optimizer), options=GATHER_ON_MAIN)


def load_optimizer_state(owner: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(owner, _raw(optimizer), state, options=SCATTER_FULL)


def whole_weights(accelerator: Any, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """What to save for `module`: None when its parameters are whole (save the module as it is), else
    its gathered weights, each tied parameter once under its first name (the embeddings, not the
    LM head tied to them: the file `save_pretrained` writes for an unsharded model). Under FSDP every
    process calls it (a collective); the main process saves."""
    if not is_sharded(accelerator):
        return None
    state = model_state(module)
    first_name: dict[int, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if first_name.setdefault(id(param), name) != name:
            state.pop(name, None)
    return state
