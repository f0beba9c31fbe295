"""The memory planner against measured memory: planned vs measured, per term and per PPO phase.

Measured = live tensor bytes (rlhfkit.memory.measure.LiveBytes, a TorchDispatchMode that charges
every tensor storage an op returns until it is freed), not process RSS. Models are built from
configs with random weights (no download) and run through rlhfkit's own PPO code:
`HFGenerationBackend.generate` (generation), reward-model scoring in chunks of 4 × mini-batch plus
`make_experience` over mini-batch chunks (experience), `ppo_update` on the accelerate-prepared
`ActorCritic` (update: forward, backward, AdamW step). One warm-up
iteration runs first, so Adam's moments exist (the planner's steady state); the second iteration is
measured. The planner's allowance (fragmentation, CUDA context) is not a tensor and is left out.

Isolable terms: weights and Adam moments (summed over the models), gradients (after one backward),
KV cache (a full-length cached forward), activations saved by one trunk forward, the logits path
(lm_head → logprobs + entropy → backward). With gradient checkpointing the saved-activations term
compares the checkpointed inputs only; the one block recomputed in backward shows in the update peak.

    OMP_NUM_THREADS=1 .venv/bin/python bench/memory_plan.py            # every configuration
    OMP_NUM_THREADS=1 .venv/bin/python bench/memory_plan.py --only tiny default
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits
from rlhfkit.config.stages import GenerationSection, LoRASection, PPOConfig
from rlhfkit.memory import terms
from rlhfkit.memory.measure import LiveBytes, model_tensors, optimizer_tensors
from rlhfkit.memory.plan import PlanInputs, Settings, plan_memory
from rlhfkit.memory.shapes import ModelShape, shape_from_hf_config
from rlhfkit.models.actor_critic import ActorCritic
from rlhfkit.models.lora import AdapterFreeReference, add_lora
from rlhfkit.models.scoring import sequence_scores
from rlhfkit.models.packed_attention import use_packed_attention
from rlhfkit.models.value_head import SharedValueHead
from rlhfkit.rollout.experience import AdvantageSettings, make_experience
from rlhfkit.rollout.generation import HFGenerationBackend, truncate_after_eos
from rlhfkit.rollout.types import Rollout
from rlhfkit.stages.ppo import _experience_micro_batches
from rlhfkit.training.distributed import Collectives
from rlhfkit.training.faults import FaultGuard
from rlhfkit.training.loop import make_accelerator
from rlhfkit.training.ppo_update import ppo_update

TOLERANCE = 0.15


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # gpt2-tiny, gpt2-default, smollm2
    rollout: int
    mini: int
    prompt: int
    response: int
    lora: bool = False
    checkpointing: bool = False
    bf16: bool = False  # bf16 weights, torch AdamW with bf16 moments (the planner's "half")
    shared: bool = False  # ppo.value_head: shared (a scalar head on the policy, no critic model)
    value_lora: bool = False  # ppo.value_lora: the critic as adapters (r = 8) + its scalar head
    budget: int | None = None  # ppo.micro_batch_tokens: packed micro-batches of ≤ this many tokens


CASES = [
    Case("tiny", "gpt2-tiny", rollout=16, mini=4, prompt=8, response=24),
    Case("default", "gpt2-default", rollout=64, mini=16, prompt=32, response=24),
    Case("default-shared", "gpt2-default", rollout=64, mini=16, prompt=32, response=24, shared=True),
    Case("default-packed", "gpt2-default", rollout=64, mini=16, prompt=32, response=24, budget=640),
    Case("smollm2", "smollm2", rollout=8, mini=8, prompt=64, response=64),
    Case("smollm2-lora", "smollm2", rollout=8, mini=8, prompt=64, response=64, lora=True),
    Case("smollm2-ckpt", "smollm2", rollout=8, mini=8, prompt=64, response=64, checkpointing=True),
    Case("smollm2-lora-ckpt", "smollm2", rollout=8, mini=8, prompt=64, response=64, lora=True, checkpointing=True),
    Case("smollm2-bf16", "smollm2", rollout=8, mini=8, prompt=64, response=64, bf16=True),
    Case("smollm2-value-lora", "smollm2", rollout=8, mini=8, prompt=64, response=64, value_lora=True),
]

#: SFT and RM updates (one phase): rows × tokens as in presets/default.yaml (sft batch 16, rm batch 32, max_length 96)
STAGE_CASES = [("sft-default", "sft", "gpt2-default", 16, 96), ("rm-default", "rm", "gpt2-default", 32, 96)]


def _configs(family: str):
    """(causal-LM config, sequence-classification config) with random weights, nothing downloaded."""
    from transformers import GPT2Config, LlamaConfig

    if family == "gpt2-tiny":  # rlhfkit.models.tiny.build_tiny_model's shape, its tokenizer's 300 tokens
        config = GPT2Config(vocab_size=300, n_layer=2, n_embd=32, n_head=2, n_positions=128,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    elif family == "gpt2-default":  # tasks/fortunes/base_model.py BaseModelSpec.default()
        config = GPT2Config(vocab_size=4096, n_layer=4, n_embd=128, n_head=4, n_positions=128,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    else:  # SmolLM2-135M's config.json numbers
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                             tie_word_embeddings=True, rms_norm_eps=1e-5)
    config.pad_token_id = config.vocab_size - 2
    config.eos_token_id = config.vocab_size - 1
    config.bos_token_id = config.vocab_size - 1
    return config


def build_models(case: Case):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = _configs(case.family)
    torch.manual_seed(0)
    if case.bf16:
        config.dtype = torch.bfloat16
    policy = AutoModelForCausalLM.from_config(config)
    rm_config = copy.deepcopy(config)
    rm_config.num_labels = 1
    reward = AutoModelForSequenceClassification.from_config(rm_config).eval().requires_grad_(False)
    critic = AutoModelForSequenceClassification.from_config(rm_config)
    if case.bf16:
        policy, reward, critic = (m.to(torch.bfloat16) for m in (policy, reward, critic))
    if case.checkpointing:
        for model in (policy, critic):  # (no shared-head case is checkpointed)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if case.lora:
        policy = add_lora(policy, LoRASection(r=8))
        reference = AdapterFreeReference(policy).eval()
    else:
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    if case.budget is not None:  # packed rows attend row by row, as the PPO stage sets up
        for model in (policy, reference, critic):
            use_packed_attention(model)
    if case.shared:
        critic = SharedValueHead.for_policy(policy)
    if case.value_lora:
        critic = add_lora(critic, LoRASection(r=8), where="ppo.value_lora", head="score")
    return config, policy, reference, reward, critic


def plan_for(case: Case, shape: ModelShape):
    settings = Settings(precision="half" if case.bf16 else "fp32", device="cpu", shared_value_head=case.shared, gradient_checkpointing=case.checkpointing, lora_rank=8 if case.lora else None,
                        value_lora_rank=8 if case.value_lora else None,
                        rollout_batch=case.rollout, mini_batch=case.mini, grad_accum=1,
                        micro_batch_tokens=case.budget, prompt_len=case.prompt, response_len=case.response)
    return plan_memory(PlanInputs("ppo", shape, shape, shape, settings))


def _ppo_config(case: Case) -> PPOConfig:
    return PPOConfig(batch_size=case.rollout, mini_batch_size=case.mini, gradient_accumulation_steps=1, ppo_epochs=1,
                     micro_batch_tokens=case.budget,
                     generation=GenerationSection(max_new_tokens=case.response, max_prompt_length=case.prompt))


def iteration(case, config, actor_critic, reference, reward, optimizer, scheduler, accelerator,
              meter: LiveBytes | None):
    """One PPO iteration through rlhfkit's code; returns the peak bytes of each phase (with a meter)."""
    peaks = {}
    ppo = _ppo_config(case)
    tokenizer = SimpleNamespace(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    policy = accelerator.unwrap_model(actor_critic).policy
    backend = HFGenerationBackend(policy, tokenizer, ppo.generation)
    backend.config.min_new_tokens = case.response  # full-length responses: the planner plans the budget
    query = torch.randint(0, config.vocab_size - 2, (case.rollout, case.prompt))
    mask = torch.ones_like(query)

    def mark(name):
        if meter is not None:
            peaks[name] = meter.peak
            meter.reset_peak()

    response = backend.generate(query, mask)
    mark("generation")
    ids, rmask, ended = truncate_after_eos(response, config.eos_token_id, config.pad_token_id)
    rollout = Rollout(query, mask, ids, rmask, ended, [""] * case.rollout, [""] * case.rollout)
    scores = []
    with torch.no_grad():
        for start in range(0, case.rollout, 4 * case.mini):  # RewardModelEnsemble's batch: 4 × mini-batch
            rows = slice(start, start + 4 * case.mini)
            scores.append(sequence_scores(reward, rollout.input_ids[rows], rollout.attention_mask[rows]))
    settings = AdvantageSettings(kl_coef=0.05, kl_estimator="k1", gamma=1.0, lam=0.95, whiten_rewards=False,
                                 whiten_advantages=True)
    generator = torch.Generator().manual_seed(0)
    # the stage's own micro-batches: mini-batch chunks, or under a budget the update's first-epoch packs
    first_order, batches = _experience_micro_batches(ppo, rollout, generator, torch.device("cpu"))
    exp = make_experience(rollout, torch.cat(scores).float(), actor_critic, reference, settings,
                          ppo.generation.temperature, batches, packed=case.budget is not None)
    mark("experience")
    ppo_update(exp, actor_critic, optimizer, scheduler, accelerator, ppo, generator,
               Collectives(accelerator.device), FaultGuard("ppo", 3), iteration=1, first_order=first_order)
    mark("update")
    return peaks


def measure_phases(case: Case):
    from transformers import get_scheduler

    config, policy, reference, reward, critic = build_models(case)
    accelerator = make_accelerator("cpu", "no")
    trained = [p for m in (policy, critic) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-6)
    scheduler = get_scheduler("constant", optimizer)
    actor_critic, optimizer = accelerator.prepare(ActorCritic(policy, critic), optimizer)
    args = (case, config, actor_critic, reference, reward, optimizer, scheduler, accelerator)
    iteration(*args, None)  # warm-up: Adam state exists
    frozen = [reference] if not case.lora else []
    with LiveBytes() as meter:
        meter.track(model_tensors(policy, critic, reward, *frozen))
        meter.track(optimizer_tensors(optimizer))
        resident = {"weights": sum(p.numel() * p.element_size() for m in (policy, critic, reward, *frozen) for p in m.parameters()),
                    "Adam m, v": sum(t.numel() * t.element_size() for t in optimizer_tensors(optimizer) if t.dim() > 0)}
        meter.reset_peak()
        peaks = iteration(*args, meter)
    return config, policy, peaks, resident, trained


def measure_terms(case: Case, config, policy, trained) -> dict[str, float]:
    """Each isolable term on its own."""
    seq, rows = case.prompt + case.response, case.mini
    ids = torch.randint(0, config.vocab_size - 2, (rows, seq))
    base = policy.get_base_model() if case.lora else policy
    trunk = getattr(base, base.base_model_prefix)
    out = {"gradients": sum(p.numel() * p.element_size() for p in trained)}
    with torch.no_grad(), LiveBytes() as meter:  # KV cache of the whole rollout at full length
        rollout_ids = torch.randint(0, config.vocab_size - 2, (case.rollout, seq))
        meter.track(model_tensors(base))
        before = meter.live
        cache = trunk(input_ids=rollout_ids, use_cache=True).past_key_values
        del rollout_ids
        out["KV cache"] = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        del cache
    base.train()
    with LiveBytes() as meter:  # activations saved by the trunk (the hidden state it returns included)
        meter.track(model_tensors(base))
        before = meter.live
        hidden = trunk(input_ids=ids).last_hidden_state
        out["activations (saved)"] = meter.live - before
        del hidden
    base.eval()
    with LiveBytes() as meter:  # the logits path: lm_head -> logprobs + entropy -> backward, at its peak
        head = base.get_output_embeddings()
        head.weight.requires_grad_(False)  # its gradient is a gradients term, not the logits path
        x = torch.randn(rows, case.response, config.hidden_size, dtype=head.weight.dtype, requires_grad=True)
        meter.track(model_tensors(head))
        meter.track([x])
        before = meter.live
        logits = head(x)
        labels = torch.randint(0, config.vocab_size, (rows, case.response))
        loss = logprobs_from_logits(logits, labels, 0.7).sum()
        with torch.no_grad():  # no entropy bonus (the default): the update keeps no graph for the entropy
            entropy_from_logits(logits, 0.7)
        del logits
        meter.reset_peak()
        loss.backward()
        out["logits backward"] = meter.peak - before
        logits = head(x)  # with an entropy bonus (ppo.entropy_coef > 0) the entropy's softmax is in the graph
        loss = logprobs_from_logits(logits, labels, 0.7).sum() + entropy_from_logits(logits, 0.7).sum()
        del logits
        meter.reset_peak()
        loss.backward()
        out["logits backward, entropy bonus"] = meter.peak - before
        head.weight.requires_grad_(not case.lora)
    return out


def planned_terms(case: Case, shape: ModelShape, plan) -> dict[str, float]:
    """The planner's figure for each isolable term (the same functions plan_memory sums)."""
    seq, rows = case.prompt + case.response, case.mini
    resident = [t for t in plan.phases[0].terms if t.name in ("weights", "Adam m, v")]
    act = 2 if case.bf16 else 4
    lora = (8, shape.default_lora_targets()) if case.lora else None
    saved_ckpt = (rows * seq * (shape.n_layers * shape.hidden + terms.outside_saved_per_token(shape, case.lora)) * act
                  + terms.norm_upcast_bytes(shape, rows * seq, act, 0))  # checkpointed: block inputs only
    return {
        "weights": sum(t.bytes for t in resident if t.name == "weights"),
        "Adam m, v": sum(t.bytes for t in resident if t.name == "Adam m, v"),
        "gradients": (_policy_trainable(case, shape) + _critic_trainable(case, shape)) * act,
        "KV cache": terms.kv_cache_bytes(shape, case.rollout, seq, act),
        "activations (saved)": saved_ckpt if case.checkpointing else terms.activation_bytes(shape, rows * seq, act, False, lora),
        "logits backward": terms.logit_copies_bytes(rows, case.response, shape.vocab,
                                                    terms.LOGIT_COPIES_BACKWARD_NO_ENTROPY_HALF if case.bf16
                                                    else terms.LOGIT_COPIES_BACKWARD_NO_ENTROPY),
        "logits backward, entropy bonus": terms.logit_copies_bytes(rows, case.response, shape.vocab,
                                                                   terms.LOGIT_COPIES_BACKWARD),
    }


def _policy_trainable(case: Case, shape: ModelShape) -> int:
    return shape.lora_params(8) if case.lora else shape.n_params()


def _critic_trainable(case: Case, shape: ModelShape) -> int:
    if case.shared:
        return shape.hidden + 1
    return shape.lora_params(8) + shape.hidden if case.value_lora else shape.scalar_head_params()


def run_case(case: Case) -> list[dict]:
    config, policy, peaks, resident, trained = measure_phases(case)
    shape = shape_from_hf_config(config, case.family)
    plan = plan_for(case, shape)
    measured = {**resident, **measure_terms(case, config, policy, trained)}
    planned = planned_terms(case, shape, plan)
    rows = [{"case": case.name, "what": k, "planned": planned[k], "measured": measured[k]} for k in planned]
    for phase in plan.phases:
        key = phase.name.split(" ")[0]
        rows.append({"case": case.name, "what": f"peak: {phase.name}", "planned": phase.total, "measured": peaks[key]})
    for row in rows:
        row["error"] = row["planned"] / row["measured"] - 1 if row["measured"] else 0.0
    return rows


def run_stage_case(name: str, stage: str, family: str, rows: int, seq: int) -> list[dict]:
    """One SFT or RM optimiser step (rlhfkit's losses) after a warm-up step: the update's peak."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhfkit.algos.losses import pairwise_loss, sft_loss
    from rlhfkit.stages.rm import pair_scores

    config = _configs(family)
    torch.manual_seed(0)
    if stage == "rm":
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> None:
        ids = torch.randint(0, config.vocab_size - 2, (rows, seq))
        if stage == "sft":
            loss = sft_loss(model(input_ids=ids).logits, ids)
        else:
            other = torch.randint(0, config.vocab_size - 2, (rows, seq))
            mask = torch.ones_like(ids)
            batch = {"chosen_input_ids": ids, "chosen_attention_mask": mask, "rejected_input_ids": other,
                     "rejected_attention_mask": mask}
            loss, _ = pairwise_loss(*pair_scores(model, batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with LiveBytes() as meter:
        meter.track(model_tensors(model))
        meter.track(optimizer_tensors(optimizer))
        meter.reset_peak()
        step()
    shape = shape_from_hf_config(config, family)
    settings = Settings(precision="fp32", device="cpu", mini_batch=rows, grad_accum=1, prompt_len=0, response_len=seq)
    plan = plan_memory(PlanInputs(stage, shape, shape, shape, settings))
    planned = plan.peak.total
    return [{"case": name, "what": f"peak: {plan.peak.name}", "planned": planned, "measured": meter.peak,
             "error": planned / meter.peak - 1}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from rich.console import Console
    from rich.table import Table

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        rows += run_case(case)
    for name, stage, family, batch, seq in STAGE_CASES:
        if not args.only or name in args.only:
            rows += run_stage_case(name, stage, family, batch, seq)
    table = Table(title=f"planned vs measured live tensor bytes (target ±{TOLERANCE:.0%})", title_justify="left")
    for col in ("case", "term / phase", "planned MB", "measured MB", "error"):
        table.add_column(col, justify="left" if col in ("case", "term / phase") else "right")
    for row in rows:
        colour = "green" if abs(row["error"]) <= TOLERANCE else "red"
        table.add_row(row["case"], row["what"], f"{row['planned'] / 1e6:.2f}", f"{row['measured'] / 1e6:.2f}",
                      f"[{colour}]{row['error']:+.1%}")
    Console(width=110).print(table)
    worst = max(rows, key=lambda r: abs(r["error"]))
    print(json.dumps({"tolerance": TOLERANCE, "all_within": abs(worst["error"]) <= TOLERANCE,
                      "worst": {k: worst[k] for k in ("case", "what", "error")},
                      "rows": [{**r, "planned": round(r["planned"]), "measured": round(r["measured"]),
                                "error": round(r["error"], 4)} for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
