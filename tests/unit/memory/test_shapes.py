"""Model shapes: parameter counts against published figures and transformers' own models (meta device)."""

from dataclasses import replace

import pytest
import torch

from rlhfkit.memory.shapes import PRESETS, load_shape, shape_from_hf_config

# Published parameter counts, and the hand sum that gives them:
# Llama-2-7B: embeddings 32000·4096 = 131,072,000, twice (untied head) = 262,144,000;
#   per layer 4·4096² + 3·4096·11008 + 2·4096 = 202,383,360, × 32 = 6,476,267,520; final norm 4096.
LLAMA2_7B = 6_738_415_616
# GPT-2: wte 50257·768 + wpe 1024·768 + 12 × 7,087,872 + final LN 1536 (tied head).
GPT2 = 124_439_808
# SmolLM2-135M: 49152·576 + 30 × (2·576² + 2·576·192 + 3·576·1536 + 2·576) + 576 (tied head).
SMOLLM2_135M = 134_515_008


def test_published_parameter_counts():
    assert PRESETS["7b"].n_params() == LLAMA2_7B
    assert PRESETS["gpt2"].n_params() == GPT2
    assert PRESETS["smollm2-135m"].n_params() == SMOLLM2_135M


def test_broken_variant_forgetting_the_untied_head_misses_llama_7b():
    broken = replace(PRESETS["7b"], tied_embeddings=True)  # counts the 131M output matrix zero times
    assert LLAMA2_7B - broken.n_params() == 32000 * 4096


def test_lora_parameters_match_peft_for_llama_7b():
    # r·(in + out) for q and v in every block: 8·(4096 + 4096)·2·32 = 4,194,304 (peft's printout)
    assert PRESETS["7b"].lora_params(8) == 4_194_304
    with pytest.raises(ValueError, match="not linears"):
        PRESETS["7b"].lora_params(8, ("c_attn",))


def _meta_count(model_cls, config) -> int:
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa", "qwen2-bias", "llama-untied"])
def test_formula_equals_transformers_models(kind):
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                              Qwen2Config, Qwen2ForCausalLM)

    if kind == "gpt2":
        config, cls = GPT2Config(n_layer=3, n_embd=96, n_head=4, vocab_size=1000, n_positions=64), GPT2LMHeadModel
    elif kind == "qwen2-bias":
        config, cls = Qwen2Config(num_hidden_layers=2, hidden_size=64, intermediate_size=160, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=500, tie_word_embeddings=True), Qwen2ForCausalLM
    else:
        config = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=176, num_attention_heads=8,
                             num_key_value_heads=2 if kind == "llama-gqa" else 8, vocab_size=700,
                             tie_word_embeddings=kind == "llama-gqa")
        cls = LlamaForCausalLM
    shape = shape_from_hf_config(config)
    assert shape.n_params() == _meta_count(cls, config)
    if kind == "llama-untied":  # a reward model / critic: the trunk plus a (hidden → 1) score head
        config.num_labels = 1
        assert shape.scalar_head_params() == _meta_count(LlamaForSequenceClassification, config)


def test_load_shape_reads_a_local_config_json(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000).save_pretrained(tmp_path)
    assert load_shape(str(tmp_path)).n_params() == LLAMA2_7B
    assert load_shape("70B") is PRESETS["70b"]
    assert load_shape("HuggingFaceTB/SmolLM2-135M").n_params() == SMOLLM2_135M  # a preset's hub name
    with pytest.raises(ValueError, match="never downloads"):
        load_shape("someone/not-a-cached-model")
