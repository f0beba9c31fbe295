"""Device memory: named GPUs, sizes like `80GiB`, and what this machine has (CUDA or host RAM)."""

from __future__ import annotations

import re
from dataclasses import dataclass

GiB = 2**30

#: Memory of common accelerators as sold; "80G" cards have 80 GiB (81 920 MiB).
GPUS: dict[str, float] = {
    "a100-40g": 40 * GiB,
    "a100-80g": 80 * GiB,
    "h100-80g": 80 * GiB,
    "h200": 141e9,
    "a10-24g": 24 * GiB,
    "l4-24g": 24 * GiB,
    "rtx4090": 24 * GiB,
    "v100-32g": 32 * GiB,
    "mi300x": 192 * GiB,
}

_UNITS = {"": 1e9, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": GiB, "tib": 2**40, "k": 2**10, "m": 2**20, "g": GiB}


def parse_size(text: str) -> float:
    """Bytes of '80GiB', '80GB', '79.5 GiB', '80G' (binary) or a bare number of GB."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"--gpu-memory {text!r}: expected a size like 80GiB, 80GB or 24G")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def gpu_memory(name: str) -> float:
    key = name.lower()
    if key not in GPUS:
        raise ValueError(f"--gpu {name!r}: known devices are {', '.join(GPUS)} (or give --gpu-memory)")
    return GPUS[key]


@dataclass(frozen=True)
class DeviceBudget:
    kind: str  # "cuda" or "cpu"
    count: int
    capacity: float  # bytes per device
    description: str


def detect(device: str = "auto") -> DeviceBudget:
    """The devices a run would use: CUDA GPUs (the smallest one's total memory), else available RAM."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        total = min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
        name = torch.cuda.get_device_name(0)
        return DeviceBudget("cuda", n, float(total), f"{n} × {name}")
    import psutil

    available = float(psutil.virtual_memory().available)
    return DeviceBudget("cpu", 1, available, "available RAM (CPU)")
