"""The sharded set-ups rlhfkit cannot save whole are refused in one line before any model loads;
DDP, FSDP2 and DeepSpeed ZeRO-2/3 (gathered by training/sharded.py) are accepted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from rlhfkit.config.load import ConfigError
from rlhfkit.training.distributed import check_sharding, cpu_accelerator


def _accelerator(kind, fsdp_version=None, zero_stage=None):
    fsdp = SimpleNamespace(fsdp_version=fsdp_version) if fsdp_version else None
    deepspeed = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=fsdp, deepspeed_plugin=deepspeed))


@pytest.mark.parametrize("accelerator, lora, message", [
    (_accelerator(DistributedType.FSDP, fsdp_version=1), False, "FSDP version 1 is not supported"),
    (_accelerator(DistributedType.FSDP, fsdp_version=2), True, "LoRA under FSDP is not supported"),
    (_accelerator(DistributedType.DEEPSPEED, zero_stage=3), True, "LoRA under DeepSpeed is not supported"),
    (_accelerator(DistributedType.DEEPSPEED, zero_stage=2), True, "LoRA under DeepSpeed is not supported"),
])
def test_unsavable_sharding_is_refused(accelerator, lora, message):
    with pytest.raises(ConfigError, match=message):
        check_sharding(accelerator, lora)


@pytest.mark.parametrize("accelerator, lora", [
    (_accelerator(DistributedType.NO), True), (_accelerator(DistributedType.MULTI_CPU), False),
    (_accelerator(DistributedType.MULTI_GPU), True), (_accelerator(DistributedType.FSDP, fsdp_version=2), False),
    (_accelerator(DistributedType.DEEPSPEED, zero_stage=2), False), (_accelerator(DistributedType.DEEPSPEED, zero_stage=3), False),
])
def test_savable_set_ups_are_accepted(accelerator, lora):
    check_sharding(accelerator, lora)


def test_a_deepspeed_launch_is_not_forced_onto_accelerate_cpu_processes(monkeypatch):
    """accelerate runs DeepSpeed only when not told `cpu`; DeepSpeed brings its own CPU accelerator."""
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setattr("rlhfkit.training.distributed.no_accelerator", lambda: True)
    assert cpu_accelerator()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch --config_file zero2.yaml` sets
    assert not cpu_accelerator()
