"""Activations that transformers writes as several tensor operations, swapped for torch's one-kernel form.

GPT-2's `gelu_new` (transformers' `NewGELUActivation`) is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
written as seven elementwise operations: seven passes over the MLP's (tokens × 4d) activation in
the forward, as many in the backward, and four intermediates of that size kept for the backward.
`F.gelu(x, approximate="tanh")` — transformers' own `GELUTanh`, the `gelu_pytorch_tanh` of newer
configs — is the same formula in one kernel that keeps only x. The two agree to float rounding
(transformers documents them as equivalent); profiled on bench/compare_trl.py's smallest PPO shape
(bench/profile_ppo.py), the seven operations were ~28 % of the update's CPU time.

The swap changes modules only: no parameter, no config, no checkpoint key — a saved model still says
`gelu_new` and loads anywhere as before.
"""

from __future__ import annotations

from torch import nn
from transformers.activations import GELUTanh, NewGELUActivation


def use_fused_activations(model: nn.Module) -> nn.Module:
    """Replace every `NewGELUActivation` submodule of `model` by `GELUTanh` (in place; returns `model`)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
    return model
