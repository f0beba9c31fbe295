"""A scalar value head on the policy's own last hidden state (`ppo.value_head: shared`).

With a shared head there is no separate critic model: V(s_t) is read from the same forward pass
that gives the policy logits, so the value loss also trains the policy's trunk (that is the point
of sharing: one network, half the memory, the critic's gradient shapes the policy's features).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


class SharedValueHead(nn.Linear):
    """Linear(hidden, 1) with weights ~ N(0, 1/sqrt(d+1)) and zero bias (N+ detail 9); (…, d) -> (…)."""

    def __init__(self, hidden_size: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__(hidden_size, 1, dtype=dtype, device=device)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / (hidden_size + 1) ** 0.5)
            self.bias.zero_()

    @classmethod
    def for_policy(cls, policy: nn.Module) -> "SharedValueHead":
        """A head sized, typed and placed like the policy's last hidden state."""
        param = next(policy.parameters())
        return cls(policy.config.hidden_size, dtype=param.dtype, device=param.device)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden).squeeze(-1)

    def save(self, path: Path, weights: dict | None = None) -> Path:
        """Weights as a plain safetensors file (`weight`, `bias`), written then renamed. `weights`: the
        whole weights when FSDP has sharded them (training/sharded.py)."""
        from safetensors.torch import save_file

        tmp = path.with_name(path.name + ".tmp")
        state = weights if weights is not None else self.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
        tmp.replace(path)
        return path
