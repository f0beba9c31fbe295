"""LoRA adapters on the policy (`ppo.lora`), via the optional `peft` package.

With adapters the reference is not a second model: it is the policy with its adapters switched
off, so reference logprobs are the base model's exactly (LoRA's B starts at zero, so the first
rollout has KL 0). Only the adapter weights train; the final policy is saved merged, as an
ordinary causal-LM checkpoint.
"""

from __future__ import annotations

import copy

from torch import nn

from rlhfkit.config.load import ConfigError

INSTALL_HINT = "pip install 'rlhfkit[peft]'"


def require_peft():
    """The `peft` module, or a ConfigError saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"ppo.lora needs the optional `peft` package: {INSTALL_HINT}") from None
    return peft


def add_lora(policy: nn.Module, section) -> nn.Module:
    """The policy wrapped with trainable LoRA adapters (base weights frozen)."""
    peft = require_peft()
    config = peft.LoraConfig(task_type="CAUSAL_LM", r=section.r, lora_alpha=section.alpha,
                             lora_dropout=section.dropout, target_modules=section.target_modules)
    return peft.get_peft_model(policy, config)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


class AdapterFreeReference(nn.Module):
    """The reference model as a view of a LoRA policy with its adapters disabled (no extra weights)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self._policy = [policy]  # a list, so the policy is not registered (or frozen, or saved) as a submodule

    def forward(self, *args, **kwargs):
        policy = self._policy[0]
        with policy.disable_adapter():
            return policy(*args, **kwargs)


def merged(policy: nn.Module, *, in_place: bool = False) -> nn.Module:
    """A plain causal LM with the adapters folded in; a copy unless `in_place` (after training)."""
    if not is_lora(policy):
        return policy
    return (policy if in_place else copy.deepcopy(policy)).merge_and_unload()
