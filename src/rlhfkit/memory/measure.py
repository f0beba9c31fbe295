"""Live tensor bytes on any device, for checking the planner against what really allocates.

`LiveBytes` is a TorchDispatchMode: every tensor an op returns is charged to its storage the first
time the storage is seen and released by a weakref callback when the storage dies. Tensors that
already exist when the mode starts (weights, optimizer states) are charged with `track()`.
This counts tensor storages, not process RSS (which carries the interpreter, the libraries and
memory the allocator has freed but kept), and not the scratch buffers a kernel allocates and
frees inside one op. `peak` is the most bytes alive at once since the last `reset_peak()`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive now (`live`) and at most (`peak`), counted op by op."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: dict[int, weakref.ref] = {}
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.live = 0
        self.peak = 0

    def _charge(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen or storage.device.type == "meta":
            return
        size = storage.nbytes()
        self._seen[storage] = size
        key = id(storage)

        def release(_ref, key=key, size=size):
            self._refs.pop(key, None)
            self.live -= size

        self._refs[key] = weakref.ref(storage, release)
        self.live += size
        self.peak = max(self.peak, self.live)

    def track(self, tensors: Iterable[torch.Tensor]) -> None:
        """Charge tensors that exist already (parameters, gradients, optimizer states)."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._charge(t.untyped_storage())

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._charge(t.untyped_storage())
        return out


def model_tensors(*modules: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters, their gradients and buffers of `modules`."""
    found: list[torch.Tensor] = []
    for module in modules:
        for p in module.parameters():
            found.append(p)
            if p.grad is not None:
                found.append(p.grad)
        found.extend(module.buffers())
    return found


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor in the optimizer's state (Adam's moments, step counters)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
