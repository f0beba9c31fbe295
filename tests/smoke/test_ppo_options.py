"""PPO options from the PPO issue, on the tiny random-init GPT-2: a value head shared with the
policy (`ppo.value_head=shared`) and LoRA adapters with an adapter-free reference (`ppo.lora`).
The LoRA tests need the optional `peft` package and are skipped without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rlhfkit.config import load_config
from rlhfkit.config.load import ConfigError
from rlhfkit.models.value_head import SharedValueHead
from rlhfkit.models.actor_critic import ActorCritic, response_logprobs
from rlhfkit.stages import ppo as ppo_stage
from rlhfkit.training.checkpoint import latest_checkpoint
from rlhfkit.training.metrics import read_metrics



def _config(model_dir: Path, prompts: Path, *overrides: str):
    return load_config(None, [
        "seed=0", "device=cpu",
        f"ppo.policy.name_or_path={model_dir}", f"ppo.data.path={prompts}",
        "ppo.reward.callable=reward_fns:count_lowercase",
        "ppo.batch_size=8", "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1", "ppo.ppo_epochs=2",
        "ppo.generation.max_new_tokens=8", "ppo.logging.progress=false", "ppo.num_iterations=2",
        "ppo.learning_rate=1e-3", "ppo.kl.adaptive=false",
        *overrides,
    ])


def _iterations(out: Path) -> list[dict]:
    return [m for m in read_metrics(out / "metrics.jsonl") if "objective/scores" in m]


# ---------------------------------------------------------------- shared value head


def test_shared_value_head_run(tmp_path, tiny_model_dir, prompts_file, reward_fns):
    cfg = _config(tiny_model_dir, prompts_file, "ppo.value_head=shared", "ppo.checkpoint.keep_when_finished=true")
    ppo_stage.validate(cfg)
    out = tmp_path / "ppo"
    ppo_stage.run(cfg, out)

    metrics = _iterations(out)
    assert [m["step"] for m in metrics] == [1, 2]
    assert [m["policy/first_minibatch_ratio_dev"] for m in metrics] == [0.0, 0.0]
    assert metrics[0]["objective/kl"] == 0.0
    assert all(m["loss/value_avg"] > 0 for m in metrics)
    # no critic model anywhere: the head is saved next to the policy and in the resumable checkpoint
    assert not (out / "value_model").exists()
    head = load_file(out / "value_head.safetensors")
    assert set(head) == {"weight", "bias"} and head["weight"].shape[0] == 1
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None and not (ckpt / "value_model.safetensors").exists()
    in_ckpt = load_file(ckpt / "value_head.safetensors")
    assert torch.equal(in_ckpt["weight"], head["weight"]) and torch.equal(in_ckpt["bias"], head["bias"])
    assert head["bias"].abs().sum() > 0  # trained (initialised at zero)
    AutoModelForCausalLM.from_pretrained(out / "policy")


def _logprobs(model, rollout, temperature):
    return response_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1], temperature)


def _forward(actor_critic, rollout, temperature):
    return actor_critic(rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1], temperature)


def test_shared_head_values_align_with_token_values(tiny_model_dir):
    """Same positions as a separate critic's values: a critic built from the policy's trunk and the
    same head gives identical values, and the logprobs and entropy are a separate critic's pair's exactly."""
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    head = SharedValueHead.for_policy(policy)
    assert head.bias.item() == 0.0
    assert abs(head.weight.std().item() - 1 / (policy.config.hidden_size + 1) ** 0.5) < 0.05

    class Critic(torch.nn.Module):  # a *ForSequenceClassification look-alike over the same weights
        base_model_prefix = "transformer"

        def __init__(self):
            super().__init__()
            self.transformer, self.score = policy.transformer, head

    rollout = _toy_rollout(policy.config.vocab_size)
    with torch.no_grad():
        logprobs, entropy, values = _forward(ActorCritic(policy, head), rollout, 0.7)
        ref_logprobs, ref_entropy, critic_values = _forward(ActorCritic(policy, Critic()), rollout, 0.7)
    assert values.shape == logprobs.shape == rollout.response_ids.shape
    assert torch.equal(logprobs, ref_logprobs) and torch.equal(entropy, ref_entropy)
    torch.testing.assert_close(values, critic_values, rtol=0, atol=1e-6)


def _toy_rollout(vocab: int):
    from rlhfkit.rollout.types import Rollout

    g = torch.Generator().manual_seed(1)
    query = torch.randint(3, vocab, (2, 4), generator=g)
    response = torch.randint(3, vocab, (2, 5), generator=g)
    q_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    r_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return Rollout(query_ids=query, query_mask=q_mask, response_ids=response, response_mask=r_mask,
                   ended_with_eos=torch.tensor([False, False]), prompts=["", ""], responses=["", ""])


def test_shared_head_refuses_a_value_model_path(tiny_model_dir, prompts_file):
    with pytest.raises(ConfigError, match="value_head=shared"):
        _config(tiny_model_dir, prompts_file, "ppo.value_head=shared", f"ppo.value_model.name_or_path={tiny_model_dir}")


# ---------------------------------------------------------------- LoRA


def test_lora_dropout_must_be_zero(tiny_model_dir, prompts_file):
    with pytest.raises(ConfigError, match="dropout"):
        _config(tiny_model_dir, prompts_file, "ppo.lora.r=4", "ppo.lora.dropout=0.1")


@pytest.mark.parametrize("key", ["ppo.lora", "ppo.value_lora"])
def test_lora_without_peft_is_a_config_error(tiny_model_dir, prompts_file, reward_fns, monkeypatch, key):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    cfg = _config(tiny_model_dir, prompts_file, f"{key}.r=4")
    with pytest.raises(ConfigError, match=rf"^{key} needs .*pip install 'rlhfkit\[peft\]'"):
        ppo_stage.validate(cfg)  # before any model loads


def test_adapter_free_reference_is_the_base_model_exactly(tiny_model_dir):
    pytest.importorskip("peft")
    from rlhfkit.config.stages import LoRASection
    from rlhfkit.models.lora import AdapterFreeReference, add_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoRASection(r=4)).eval()
    with torch.no_grad():  # make the adapters matter
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    rollout = _toy_rollout(base.config.vocab_size)
    with torch.no_grad():
        base_lp = _logprobs(base, rollout, 0.7)
        ref_lp = _logprobs(AdapterFreeReference(policy), rollout, 0.7)
        adapted_lp = _logprobs(policy, rollout, 0.7)
    assert torch.equal(ref_lp, base_lp)
    assert not torch.equal(adapted_lp, base_lp)


def test_lora_run(tmp_path, tiny_model_dir, prompts_file, reward_fns):
    pytest.importorskip("peft")
    cfg = _config(tiny_model_dir, prompts_file, "ppo.lora.r=4", "ppo.lora.alpha=8", "ppo.checkpoint.keep_when_finished=true")
    ppo_stage.validate(cfg)
    out = tmp_path / "ppo"
    ppo_stage.run(cfg, out)

    metrics = _iterations(out)
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[0]["objective/kl"] == 0.0  # reference = policy with adapters off = base model
    assert metrics[1]["objective/kl"] != 0.0
    assert [m["policy/first_minibatch_ratio_dev"] for m in metrics] == [0.0, 0.0]

    base = {k: v for k, v in AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict().items()}
    # resumable checkpoint: base weights untouched, adapters trained
    ckpt = load_file(latest_checkpoint(out / "checkpoints") / "policy.safetensors")
    lora_keys = [k for k in ckpt if "lora_" in k]
    assert lora_keys and any(ckpt[k].abs().sum() > 0 for k in lora_keys if "lora_B" in k)
    for key, value in ckpt.items():
        if "lora_" not in key:
            name = key.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(value, base[name]), key
    # the critic trained too
    critic = load_file(out / "value_model" / "model.safetensors")
    assert any(not torch.equal(critic[k], base[k]) for k in critic if k in base)
    # the final policy is an ordinary causal LM with the adapters merged into the targeted layers
    merged = AutoModelForCausalLM.from_pretrained(out / "policy").state_dict()
    assert not any("lora" in k for k in merged)
    changed = {k for k in base if not torch.equal(merged[k], base[k])}
    assert changed and all("c_attn" in k for k in changed), changed


def test_lora_with_a_shared_value_head(tmp_path, tiny_model_dir, prompts_file, reward_fns):
    """Both options at once: the value loss reaches the trunk only through the adapters."""
    pytest.importorskip("peft")
    cfg = _config(tiny_model_dir, prompts_file, "ppo.lora.r=4", "ppo.value_head=shared", "ppo.num_iterations=1")
    out = tmp_path / "ppo"
    ppo_stage.run(cfg, out)
    (metrics,) = _iterations(out)
    assert metrics["objective/kl"] == 0.0 and metrics["policy/first_minibatch_ratio_dev"] == 0.0
    assert (out / "value_head.safetensors").is_file() and not (out / "value_model").exists()
    AutoModelForCausalLM.from_pretrained(out / "policy")


def test_value_lora_trains_only_the_critics_adapters_and_head(tmp_path, tiny_model_dir, prompts_file, reward_fns):
    """ppo.value_lora: the critic's backbone stays its initial weights, its adapters and scalar head
    train, and the saved value model is an ordinary checkpoint with the adapters merged in."""
    pytest.importorskip("peft")
    from transformers import AutoModelForSequenceClassification

    cfg = _config(tiny_model_dir, prompts_file, "ppo.value_lora.r=4", "ppo.value_lora.alpha=8",
                  "ppo.checkpoint.keep_when_finished=true")
    ppo_stage.validate(cfg)
    out = tmp_path / "ppo"
    ppo_stage.run(cfg, out)
    metrics = _iterations(out)
    assert [m["step"] for m in metrics] == [1, 2] and all(m["loss/value_avg"] > 0 for m in metrics)
    assert [m["policy/first_minibatch_ratio_dev"] for m in metrics] == [0.0, 0.0]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()  # the critic's init (callable reward)
    ckpt = load_file(latest_checkpoint(out / "checkpoints") / "value_model.safetensors")
    assert any("lora_B" in k and ckpt[k].abs().sum() > 0 for k in ckpt)  # adapters trained
    heads = [k for k in ckpt if "modules_to_save" in k and "score" in k]
    assert heads  # the scalar head is a trained copy
    for key, value in ckpt.items():
        if "lora_" in key or "score" in key:
            continue
        name = key.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, base[name]), key  # the backbone is frozen
    # the policy trained fully (no ppo.lora): it differs from the base
    policy = AutoModelForCausalLM.from_pretrained(out / "policy").state_dict()
    assert any(not torch.equal(policy[k], base[k]) for k in base)
    saved = AutoModelForSequenceClassification.from_pretrained(out / "value_model").state_dict()
    assert not any("lora" in k or "modules_to_save" in k for k in saved)
    changed = {k for k in saved if k in base and not torch.equal(saved[k], base[k])}
    assert changed and all("c_attn" in k for k in changed), changed  # merged adapters: the targeted layers only


def test_value_lora_needs_a_critic_model(tiny_model_dir, prompts_file):
    with pytest.raises(ConfigError, match="ppo.value_lora needs a critic model"):
        _config(tiny_model_dir, prompts_file, "ppo.value_lora.r=4", "ppo.value_head=shared")


def test_critic_starts_from_policy_when_rm_vocabulary_differs(tmp_path, tiny_model_dir, tiny_tokenizer):
    """The critic reads policy token ids: an RM with another tokenizer must not be its init."""
    from rlhfkit.config import load_config
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.models.tiny import build_tiny_model, build_tiny_tokenizer
    from rlhfkit.stages.ppo_inputs import value_section as _value_section

    other = build_tiny_model(tmp_path / "other_rm", build_tiny_tokenizer(["completely different words here"] * 3, vocab_size=280))
    cfg = load_config(None, [f"ppo.policy.name_or_path={tiny_model_dir}", f"ppo.reward.model_paths=[{other}]"])
    policy_tok = load_tokenizer(cfg.ppo.policy, "ppo.policy")
    assert _value_section(cfg.ppo, policy_tok).name_or_path == str(tiny_model_dir)
    same_vocab_rm = build_tiny_model(tmp_path / "same_rm", tiny_tokenizer, seed=1)
    same = load_config(None, [f"ppo.policy.name_or_path={tiny_model_dir}", f"ppo.reward.model_paths=[{same_vocab_rm}]"])
    assert _value_section(same.ppo, policy_tok).name_or_path == str(same_vocab_rm)  # same vocabulary: the RM (N+ detail 18)
