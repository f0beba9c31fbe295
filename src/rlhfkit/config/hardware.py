"""Refuse a config that asks for hardware this machine does not have, before any work.

accelerate quietly falls back to fp32 on the CPU when `device: cuda` or a mixed precision is asked
for without a GPU; a run that silently trains on other hardware than the config says is not the run
that was asked for, so each is one error line instead.
"""

from __future__ import annotations

from rlhfkit.config.load import ConfigError


def check_hardware(cfg) -> None:
    """ConfigError when `device` or `mixed_precision` needs a GPU this machine lacks."""
    import torch

    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    built = f"torch {torch.__version__}, {'built with' if torch.version.cuda else 'built without'} CUDA"
    if cfg.device == "cuda" and not cuda:
        raise ConfigError(f"device: cuda, but torch finds no CUDA GPU on this machine ({built}); "
                          "set device: cpu (or auto)")
    if cfg.device == "mps" and not mps:
        raise ConfigError("device: mps, but torch finds no Apple MPS device on this machine; set device: cpu (or auto)")
    # bf16 autocast runs on CPUs too (accelerate's CPU autocast; PPO's first-mini-batch ratio stays
    # exactly 1 there); fp16 needs a GPU's loss scaling.
    if cfg.mixed_precision == "fp16":
        on_gpu = cuda and cfg.device in ("auto", "cuda")
        if not on_gpu:
            where = "device is cpu" if cfg.device == "cpu" else f"torch finds no CUDA GPU ({built})"
            raise ConfigError(f"mixed_precision: fp16 needs a CUDA GPU, but {where}: "
                              "set mixed_precision: bf16 (CPU autocast) or no")
