"""FSDP and ZeRO-3 are refused until rlhfkit gathers the shards for its checkpoints and models."""

from __future__ import annotations

import pytest
from accelerate.utils import DistributedType

from rlhfkit.config.load import ConfigError
from rlhfkit.training.distributed import check_weights_are_gathered_on_save


@pytest.mark.parametrize("kind, stage, name", [(DistributedType.FSDP, None, "FSDP"),
                                                (DistributedType.DEEPSPEED, 3, "ZeRO-3")])
def test_sharded_weights_are_refused(kind, stage, name):
    with pytest.raises(ConfigError, match=f"{name} shards the weights"):
        check_weights_are_gathered_on_save(kind, stage)


@pytest.mark.parametrize("kind, stage", [(DistributedType.NO, None), (DistributedType.MULTI_CPU, None),
                                         (DistributedType.MULTI_GPU, None), (DistributedType.DEEPSPEED, 2)])
def test_replicated_weights_are_accepted(kind, stage):
    check_weights_are_gathered_on_save(kind, stage)
