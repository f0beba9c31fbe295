"""Padded vs token-budget (padding-free) PPO experience and update, interleaved A/B in one process.

Workload: 64 episodes with the length spread of the default preset's PPO (prompts of 3–16 real
tokens, left-padded; responses ending at EOS after 4–23 tokens, 15 % cut at the 24-token budget:
mean ≈ 15, the default run's 13.5 → 15.6), the default preset's model shape (GPT-2, 4 layers,
d=128, 4 heads, vocabulary 4096; random init — timing does not depend on the weights), and its
update: mini_batch_size 16 × 1 accumulation, 4 epochs. rlhfkit's own `make_experience` and
`ppo_update` run both ways:

  padded        ppo.micro_batch_tokens empty: micro-batches of 16 rows at the batch's full width
  budget K      ppo.micro_batch_tokens = K: each step's rows cut into micro-batches of ≤ K real
                tokens, each packed into one sequence (training/micro_batches.py,
                models/response_slots.py), attention as one causal SDPA over the rows
                scattered into a padded batch (models/packed_attention.py)
  budget K dense  (--dense-mask) the same with plain SDPA under transformers' block-diagonal
                (N, N) mask, to show what attending per row saves

After one untimed warm-up round, each repetition runs every variant, experience then update,
from the same weights; the median over repetitions is printed, with the speed-up over padded and
the losses of each (they must agree to float rounding; the first-ratio deviation must be 0). Other work on the CPU is measured while it
runs (/proc/stat busy time minus the benchmark's own CPU time, compare_trl_work.OutsideLoad):
figures taken with more than 0.25 busy cores of it are marked contended.

    OMP_NUM_THREADS=1 .venv/bin/python bench/padding_free.py --repeats 5 --budgets 160,320,640 --dense-mask
    OMP_NUM_THREADS=1 .venv/bin/python bench/padding_free.py --layers 6 --width 512 --repeats 3 --budgets 640

`--from-run RUN_DIR` takes the workload from a finished `rlhfkit run` instead: its own models
(policy and reference = RUN_DIR/sft/model, critic = RUN_DIR/ppo/value_model) and 64 of its PPO
prompts (RUN_DIR/task/ppo_prompts.jsonl) tokenized and left-padded as the PPO stage does, with
responses sampled under the run's generation settings from its SFT policy (`--policy sft`: the
lengths PPO starts from) or its final PPO policy (`--policy ppo`: the lengths it ends with).

    OMP_NUM_THREADS=2 .venv/bin/python bench/padding_free.py --from-run runs/X --policy sft --budgets 640
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

BATCH, MAX_PROMPT, MAX_RESPONSE, MINI_BATCH, EPOCHS = 64, 16, 24, 16, 4


def variable_rollout(vocab: int, seed: int = 0):
    from rlhfkit.rollout.types import Rollout

    g = torch.Generator().manual_seed(seed)
    q_len = torch.randint(3, MAX_PROMPT + 1, (BATCH,), generator=g)
    r_len = torch.randint(4, MAX_RESPONSE, (BATCH,), generator=g)
    r_len[torch.rand(BATCH, generator=g) < 0.15] = MAX_RESPONSE  # no EOS within the budget
    query_mask = (torch.arange(MAX_PROMPT).unsqueeze(0) >= MAX_PROMPT - q_len.unsqueeze(1)).long()
    response_mask = (torch.arange(MAX_RESPONSE).unsqueeze(0) < r_len.unsqueeze(1)).long()
    query = torch.randint(3, vocab, (BATCH, MAX_PROMPT), generator=g).masked_fill(query_mask == 0, 1)
    response = torch.randint(3, vocab, (BATCH, MAX_RESPONSE), generator=g).masked_fill(response_mask == 0, 1)
    return Rollout(query, query_mask, response, response_mask, r_len < MAX_RESPONSE, [""] * BATCH, [""] * BATCH)


def run_workload(run_dir: str, which: str, seed: int = 0):
    """(actor_critic, reference, rollout, temperature) from a finished run: its models, BATCH of its PPO
    prompts, responses sampled from its SFT or final PPO policy with its generation settings."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhfkit.config import load_config
    from rlhfkit.data.records import load_records
    from rlhfkit.data.tokenize import PromptCollator, tokenize_prompts
    from rlhfkit.models.actor_critic import ActorCritic
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.rollout.generation import HFGenerationBackend, sample_rollout

    run = Path(run_dir)
    cfg = load_config(run / "config.yaml")
    tokenizer = load_tokenizer(cfg.ppo.policy.model_copy(update={"name_or_path": str(run / "sft" / "model")}), "bench")
    tokenizer.padding_side = "left"
    records = load_records(run / "task" / "ppo_prompts.jsonl", "prompts")
    picked = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed))[:BATCH].tolist()
    examples = [records[i] for i in picked]
    batch = PromptCollator(tokenizer.pad_token_id)(tokenize_prompts(examples, tokenizer, cfg.ppo.generation.max_prompt_length))
    sampler = AutoModelForCausalLM.from_pretrained(run / ("sft/model" if which == "sft" else "ppo/policy")).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        rollout = sample_rollout(HFGenerationBackend(sampler, tokenizer, cfg.ppo.generation), tokenizer,
                                 [""] * BATCH, batch["input_ids"], batch["attention_mask"])
    kwargs = dict(attn_implementation="sdpa")
    policy = AutoModelForCausalLM.from_pretrained(run / "sft" / "model", **kwargs)
    reference = AutoModelForCausalLM.from_pretrained(run / "sft" / "model", **kwargs).eval()
    if not (run / "ppo" / "value_model").is_dir():
        raise SystemExit(f"{run}/ppo/value_model not found: --from-run needs a finished run with a critic model "
                         "(ppo.value_head: separate)")
    critic = AutoModelForSequenceClassification.from_pretrained(run / "ppo" / "value_model", **kwargs)
    for model in (policy, reference, critic):
        model.config.pad_token_id = tokenizer.pad_token_id
    return ActorCritic(policy, critic).eval(), reference, rollout, cfg.ppo.generation.temperature


def build_models(layers: int, width: int, vocab: int):
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from rlhfkit.models.actor_critic import ActorCritic

    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 32), vocab_size=vocab, n_positions=128,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=1,
                        num_labels=1)
    policy, reference, critic = GPT2LMHeadModel(config), GPT2LMHeadModel(config).eval(), GPT2ForSequenceClassification(config)
    return ActorCritic(policy, critic).eval(), reference


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_variant(budget: int | None, rollout, actor_critic, reference, initial_state, accelerator,
                attention: str = "sdpa", temperature: float = 0.7):
    from rlhfkit.config.stages import PPOConfig
    from rlhfkit.metric_names import M
    from rlhfkit.rollout.experience import AdvantageSettings, contiguous_chunks, make_experience
    from rlhfkit.training.distributed import Collectives
    from rlhfkit.training.faults import FaultGuard
    from rlhfkit.training.micro_batches import step_micro_batches
    from rlhfkit.training.ppo_update import ppo_update

    actor_critic.load_state_dict(initial_state)
    for model in (actor_critic.policy, actor_critic.critic, reference):
        model.set_attn_implementation(attention)
    ppo = PPOConfig(batch_size=BATCH, mini_batch_size=MINI_BATCH, gradient_accumulation_steps=1, ppo_epochs=EPOCHS,
                    micro_batch_tokens=budget, learning_rate=5e-5, generation={"temperature": temperature})
    order = torch.randperm(BATCH, generator=torch.Generator().manual_seed(1))
    if budget is None:
        batches = contiguous_chunks(BATCH, MINI_BATCH)
    else:
        plan = step_micro_batches(order, rollout.query_mask.sum(1), rollout.response_mask.sum(1), MINI_BATCH, 1, budget)
        batches = [rows for step in plan for rows in step]
    settings = AdvantageSettings(0.05, "k1", 1.0, 0.95, False, True)
    scores = torch.linspace(-1, 1, BATCH)
    t_exp, exp = _timed(lambda: make_experience(rollout, scores, actor_critic, reference, settings, temperature, batches,
                                                packed=budget is not None))
    optimizer = torch.optim.AdamW(actor_critic.parameters(), lr=5e-5, eps=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    t_upd, result = _timed(lambda: ppo_update(exp, actor_critic, optimizer, scheduler, accelerator, ppo,
                                              torch.Generator().manual_seed(2), Collectives(accelerator.device),
                                              FaultGuard("ppo", 3), iteration=1, first_order=order))
    losses = {k: result.stats[k] for k in (M.POLICY_LOSS, M.VALUE_LOSS, M.FIRST_RATIO_DEV)}
    return t_exp, t_upd, losses, float(exp.logprobs.sum())


def main() -> None:
    from rlhfkit.metric_names import M

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--budgets", default=str(MINI_BATCH * (MAX_PROMPT + MAX_RESPONSE)),
                        help="comma-separated ppo.micro_batch_tokens values to compare with the padded path")
    parser.add_argument("--from-run", metavar="RUN_DIR", help="the workload of a finished rlhfkit run (see above)")
    parser.add_argument("--policy", choices=("sft", "ppo"), default="sft",
                        help="with --from-run: sample the responses from its SFT or its final PPO policy")
    parser.add_argument("--dense-mask", action="store_true",
                        help="also run each budget with plain SDPA under transformers' dense block-diagonal mask")
    args = parser.parse_args()

    from rlhfkit.training.loop import make_accelerator

    from compare_trl_work import OutsideLoad

    outside = OutsideLoad()
    accelerator = make_accelerator("cpu", "no", 1)
    if args.from_run:
        actor_critic, reference, rollout, temperature = run_workload(args.from_run, args.policy)
        c = reference.config
        shape = f"{args.from_run} ({args.policy} responses): {c.model_type} {c.num_hidden_layers}L d={c.hidden_size} V={c.vocab_size}"
    else:
        actor_critic, reference = build_models(args.layers, args.width, args.vocab)
        rollout, temperature = variable_rollout(args.vocab), 0.7
        shape = f"GPT-2 {args.layers}L d={args.width} V={args.vocab}"
    initial = {k: v.clone() for k, v in actor_critic.state_dict().items()}
    real = int(rollout.attention_mask.sum())
    import rlhfkit.models.packed_attention  # noqa: F401 - registers the per-row packed attention

    variants = [("padded", None, "sdpa")] + [(f"budget {b}", int(b), "rlhfkit_packed") for b in args.budgets.split(",")]
    if args.dense_mask:
        variants += [(f"budget {b} dense", int(b), "sdpa") for b in args.budgets.split(",")]
    print(f"workload: {BATCH} episodes, {real} real tokens of {rollout.attention_mask.numel()} padded "
          f"({real / rollout.attention_mask.numel():.0%}), mean response {rollout.response_mask.sum(1).float().mean():.1f} "
          f"of {rollout.response_mask.shape[1]} tokens; {shape}; "
          f"mini-batch {MINI_BATCH}, {EPOCHS} epochs; torch threads {torch.get_num_threads()}; {args.repeats} repeats")
    times = {name: {"experience": [], "update": []} for name, _, _ in variants}
    losses = {}
    for name, budget, attention in variants:  # warm-up, untimed: the first variant would pay for it
        run_variant(budget, rollout, actor_critic, reference, initial, accelerator, attention, temperature)
    for _ in range(args.repeats):  # interleaved A/B
        for name, budget, attention in variants:
            t_exp, t_upd, losses[name], logprob_sum = run_variant(budget, rollout, actor_critic, reference, initial,
                                                                  accelerator, attention, temperature)
            times[name]["experience"].append(t_exp)
            times[name]["update"].append(t_upd)
            losses[name]["sum of old logprobs"] = logprob_sum
    med = {name: {phase: statistics.median(v) for phase, v in phases.items()} for name, phases in times.items()}
    print(f"{'variant':<14}{'experience s':>14}{'speed-up':>10}{'update s':>12}{'speed-up':>10}   losses (policy, value), first-ratio dev")
    for name, _, _ in variants:
        m, base = med[name], med["padded"]
        stats = losses[name]
        print(f"{name:<14}{m['experience']:>14.3f}{base['experience'] / m['experience']:>9.2f}×{m['update']:>12.3f}"
              f"{base['update'] / m['update']:>9.2f}×   {stats[M.POLICY_LOSS]:.7g}, {stats[M.VALUE_LOSS]:.7g}, "
              f"{stats[M.FIRST_RATIO_DEV]:g}")
    outside_cores = outside.stop()
    contended = outside_cores > 0.25
    print(f"other work on the CPU meanwhile: {outside_cores:.2f} busy cores of {os.cpu_count()}"
          + (": CONTENDED — treat the times as rough" if contended else ""))
    print(json.dumps({"median_s": med, "outside_load_cores": round(outside_cores, 3), "contended": contended}))


if __name__ == "__main__":
    main()
