"""`optim.group_by_length`: the SFT / RM loader batches examples of similar length — every example
once an epoch, less padding than a plain shuffle, the same order from the same seed, and a resumed
epoch replaying the rest of the interrupted one."""

from __future__ import annotations

import random

import torch

from rlhfkit.config.sections import OptimSection
from rlhfkit.training.loop import _seeded_loader, example_length
from rlhfkit.training.resume import DataPosition

BATCH = 8


def _examples(n: int = 800) -> list[dict]:
    rng = random.Random(0)
    return [{"index": i, "input_ids": [0] * rng.randint(1, 60)} for i in range(n)]


def _batches(loader) -> list[list[int]]:
    return [list(batch) for batch in loader]


def _collate(rows: list[dict]) -> list[int]:
    return [row["index"] for row in rows]


def _padded_tokens(batches: list[list[int]], examples: list[dict]) -> int:
    return sum(max(len(examples[i]["input_ids"]) for i in batch) * len(batch) for batch in batches)


def test_example_length_is_the_longer_side_of_a_pair():
    assert example_length({"input_ids": [1, 2, 3], "labels": [0] * 9}) == 3
    assert example_length({"chosen_input_ids": [1] * 4, "rejected_input_ids": [1] * 7, "margin": 0.0}) == 7


def test_grouped_batches_cover_every_example_once_with_less_padding():
    examples = _examples()
    real = sum(len(e["input_ids"]) for e in examples)
    shuffled = _batches(_seeded_loader(examples, BATCH, _collate, torch.Generator().manual_seed(1)))
    grouped = _batches(_seeded_loader(examples, BATCH, _collate, torch.Generator().manual_seed(1), group_by_length=True))
    assert sorted(i for b in grouped for i in b) == list(range(len(examples)))
    assert all(len(b) == BATCH for b in grouped)
    # Lengths uniform on 1..60 in batches of 8: a shuffled batch pads to ~54, a grouped one to ~its own length.
    assert real / _padded_tokens(shuffled, examples) < 0.65
    assert real / _padded_tokens(grouped, examples) > 0.9
    assert grouped != sorted(grouped, key=lambda b: -len(examples[b[0]]["input_ids"]))  # not one global sort


def test_grouped_order_is_seeded_and_differs_between_epochs():
    examples = _examples()

    def epochs(seed: int) -> list[list[list[int]]]:
        loader = _seeded_loader(examples, BATCH, _collate, torch.Generator().manual_seed(seed), group_by_length=True)
        return [_batches(loader), _batches(loader)]

    first, again = epochs(3), epochs(3)
    assert first == again
    assert first[0] != first[1]
    assert epochs(4)[0] != first[0]


def test_a_resumed_grouped_epoch_replays_the_rest_of_the_interrupted_one():
    examples = _examples(200)

    def make():
        g = torch.Generator().manual_seed(5)
        return DataPosition(g), _seeded_loader(examples, BATCH, _collate, g, group_by_length=True)

    position, loader = make()
    whole = [list(b) for b in position.batches(loader)]
    position, loader = make()
    for seen, _ in enumerate(position.batches(loader), start=1):
        if seen == 7:
            break
    state = position.state_dict()
    resumed, loader = make()
    resumed.load_state_dict(state)
    assert [list(b) for b in resumed.batches(loader)] == whole[7:]


def test_group_by_length_is_off_unless_asked():
    assert OptimSection().group_by_length is False


def test_neither_loader_draws_from_the_global_rng():
    """The global RNG carries dropout: a loader that drew from it at each epoch's start would shift a resumed run."""
    for grouped in (False, True):
        loader = _seeded_loader(_examples(64), BATCH, _collate, torch.Generator().manual_seed(2), group_by_length=grouped)
        torch.manual_seed(11)
        before = torch.get_rng_state()
        _batches(loader), _batches(loader)
        assert torch.equal(torch.get_rng_state(), before), f"group_by_length={grouped}"
