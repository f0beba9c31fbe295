"""models/packed_attention.py: packed rows scattered into one padded SDPA batch and gathered back."""

import torch

from rlhfkit.models.packed_attention import PACKED_ATTENTION, _row_positions


def test_row_positions_by_hand():
    row_of, offset = _row_positions(torch.tensor([0, 2, 5, 6], dtype=torch.int32), 6)
    assert row_of.tolist() == [0, 0, 1, 1, 1, 2]
    assert offset.tolist() == [0, 1, 0, 1, 2, 0]


def test_grouped_query_rows_in_a_pack_equal_each_row_alone():
    """A Llama with 4 query heads over 2 key heads (SmolLM2's kind): each packed row's logits are the
    row's logits alone, so the padding inside attention never leaks into a kept position."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    rows = [torch.randint(0, 64, (n,)) for n in (5, 9, 3)]
    alone = [model(r.unsqueeze(0)).logits[0] for r in rows]
    cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
    position_ids = torch.cat([torch.arange(len(r)) for r in rows]).unsqueeze(0)
    model.set_attn_implementation(PACKED_ATTENTION)
    packed = model(torch.cat(rows).unsqueeze(0), position_ids=position_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                   max_length_q=9, max_length_k=9).logits[0]
    for (start, end), expected in zip([(0, 5), (5, 14), (14, 17)], alone):
        torch.testing.assert_close(packed[start:end], expected, atol=1e-5, rtol=0)
