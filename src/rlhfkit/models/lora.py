"""LoRA adapters (`sft.lora`, `rm.lora`, `ppo.lora`), via the optional `peft` package.

Only the adapter weights train (for a reward model, also its freshly initialised score head,
which peft keeps as a full trainable copy: `modules_to_save`). Every stage saves its model
merged, as an ordinary checkpoint, so a LoRA run's outputs load like a full run's.

In PPO the reference is not a second model: it is the policy with its adapters switched
off, so reference logprobs are the base model's exactly (LoRA's B starts at zero, so the first
rollout has KL 0). Only the adapter weights train; the final policy is saved merged, as an
ordinary causal-LM checkpoint.
"""

from __future__ import annotations

import copy

from torch import nn

from rlhfkit.config.load import ConfigError

INSTALL_HINT = "pip install 'rlhfkit[peft]'"


def require_peft(where: str = "ppo.lora"):
    """The `peft` module, or a ConfigError saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"{where} needs the optional `peft` package: {INSTALL_HINT}") from None
    return peft


def add_lora(model: nn.Module, section, *, where: str = "ppo.lora", head: str | None = None) -> nn.Module:
    """`model` wrapped with trainable LoRA adapters (base weights frozen).

    `head`: the attribute name of a reward model's score head (`score`, `classifier`), kept fully
    trainable: it starts random, so freezing it would leave the RM a random projection. An encoder's
    modules between trunk and head (its pooler, fresh in a base DeBERTa; models/load.py) train with it."""
    from rlhfkit.models.load import ENCODER_HEAD_PARTS

    peft = require_peft(where)
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    parts = [part for part in ENCODER_HEAD_PARTS if head and part in present]
    config = peft.LoraConfig(task_type="SEQ_CLS" if head else "CAUSAL_LM", r=section.r, lora_alpha=section.alpha,
                             lora_dropout=section.dropout, target_modules=section.target_modules,
                             modules_to_save=[head, *parts] if head else None)
    return peft.get_peft_model(model, config)


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
    """The plain model with the adapters folded in (and a trained head in place); a copy unless
    `in_place` (after training)."""
    if not is_lora(policy):
        return policy
    return (policy if in_place else copy.deepcopy(policy)).merge_and_unload()
