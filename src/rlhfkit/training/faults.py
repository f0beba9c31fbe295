"""NaN / Inf guard: a non-finite loss, logprob, value or reward skips that update instead of
poisoning the weights, and too many in a row stop the run with a diagnostic.

A stage asks `guard.non_finite(step, loss=loss, ...)` for the first non-finite tensor (its name,
or None), skips the optimiser step when there is one (gradients zeroed, no optimizer or
scheduler step), and ends every update with `guard.record(step, fault, writer)`. A fault is
reported as a metrics.jsonl line `{"fault": "nan"|"inf", "tensor": NAME, "step": N, ...}` and a
console warning; a good update resets the count; `max_consecutive` faults in a row raise
`NumericalFault`, naming the tensor and the step. Periodic checkpoints are not written after a
skipped update and the stop comes before any save, so the newest checkpoint on disk follows the
last good update.

Testing aid: the environment variable RLHFKIT_INJECT_NAN makes named tensors read as NaN at given
steps, deterministically, e.g. `loss@3,4,5` or `rewards@2;loss@6` (step = optimiser step for
SFT/RM, iteration for PPO). Only `non_finite` reads it; nothing else in the code changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from rich.markup import escape

from rlhfkit.training.progress import console

INJECT_ENV = "RLHFKIT_INJECT_NAN"
# The tensors the stages check (training/loop.py, stages/ppo.py); a name outside these would never fire.
INJECTABLE = ("loss", "grad_norm", "logprobs", "ref_logprobs", "values", "scores", "rewards")


class NumericalFault(RuntimeError):
    """Training stopped after too many consecutive non-finite updates."""


def parse_injections(spec: str) -> dict[str, set[int]]:
    """`"loss@3,4;rewards@2"` -> {"loss": {3, 4}, "rewards": {2}}.

    A malformed spec (no `@`, no steps, a step that is not a positive integer, a tensor no stage
    checks) is a ConfigError, raised by the CLI before any work."""
    from rlhfkit.config.load import ConfigError

    usage = f"expected TENSOR@STEP[,STEP...][;...] with TENSOR one of {', '.join(INJECTABLE)}, e.g. loss@3,4"
    out: dict[str, set[int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, sep, steps = (x.strip() for x in part.partition("@"))
        if not sep or name not in INJECTABLE:
            raise ConfigError(f"{INJECT_ENV}={spec!r}: {part!r}: {usage}")
        numbers = [s.strip() for s in steps.split(",") if s.strip()]
        if not numbers or not all(n.isdigit() and int(n) > 0 for n in numbers):
            raise ConfigError(f"{INJECT_ENV}={spec!r}: {part!r}: steps must be positive integers; {usage}")
        out.setdefault(name, set()).update(int(n) for n in numbers)
    return out


def _kind(tensor: torch.Tensor) -> str | None:
    """"nan", "inf" or None (finite)."""
    if not torch.is_tensor(tensor):
        tensor = torch.as_tensor(tensor)
    if not tensor.is_floating_point():
        return None
    if torch.isnan(tensor).any():
        return "nan"
    if torch.isinf(tensor).any():
        return "inf"
    return None


class FaultGuard:
    """Counts consecutive skipped updates; `state_dict()` goes into checkpoints."""

    def __init__(self, stage: str, max_consecutive: int, unit: str = "step"):
        self.stage, self.max_consecutive, self.unit = stage, max_consecutive, unit
        self.injections = parse_injections(os.environ.get(INJECT_ENV, ""))
        self.consecutive = 0
        self.total = 0
        self._kind: str | None = None

    def non_finite(self, step: int, **tensors: torch.Tensor | None) -> str | None:
        """Name of the first tensor holding a NaN/Inf (None if all are finite or absent)."""
        for name, tensor in tensors.items():
            if tensor is None:
                continue
            kind = "nan" if step in self.injections.get(name, ()) else _kind(tensor.detach())
            if kind is not None:
                self._kind = kind
                return name
        return None

    def injected(self, step: int, name: str) -> bool:
        """The testing aid asks for tensor `name` to read as NaN at `step`."""
        return step in self.injections.get(name, ())

    def flag(self, name: str, kind: str = "nan") -> str:
        """Note a fault found elsewhere (e.g. on another process); returns `name` for `record`."""
        self._kind = kind
        return name

    def record(self, step: int, fault: str | None, writer: Any) -> None:
        """End of an update: reset on success; on a fault log it, warn, and stop after too many in a row."""
        if fault is None:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        kind = self._kind or "nan"
        writer.log(step, {"fault": kind, "tensor": fault, "event": f"update skipped: {fault} is {kind}"})
        console.print(f"[yellow]warning[/] {escape(self.stage)}: {fault} is {kind} at {self.unit} {step}: update skipped "
                      f"({self.consecutive} in a row, stop at {self.max_consecutive})", highlight=False)
        if self.consecutive >= self.max_consecutive:
            raise NumericalFault(
                f"{self.stage}: {self.consecutive} consecutive updates skipped for non-finite values, the last at "
                f"{self.unit} {step} ({fault} is {kind}); training stopped, the last checkpoint is the last good one. "
                "Lower the learning rate, check the data and the reward, or raise checkpoint.max_consecutive_faults"
            )

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.consecutive = int(state.get("consecutive", 0))
        self.total = int(state.get("total", 0))


__all__ = ["INJECT_ENV", "FaultGuard", "NumericalFault", "parse_injections"]
