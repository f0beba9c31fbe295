"""One PPO update on a fixed batch, in 1 or N processes — run by tests/smoke/test_ppo_ddp.py.

    python ppo_update_worker.py MODEL_DIR OUT_FILE --mini 64 --accumulation 1
    torchrun --nproc_per_node 2 ppo_update_worker.py MODEL_DIR OUT_FILE --mini 32 --accumulation 1
    torchrun --nproc_per_node 2 ppo_update_worker.py MODEL_DIR OUT_FILE --mini 32 --tokens 40
    RLHFKIT_FSDP_ON_CPU=1 accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 \
        ppo_update_worker.py MODEL_DIR OUT_FILE --mini 32      (FSDP2 over gloo)
    accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes 2 \
        ppo_update_worker.py MODEL_DIR OUT_FILE --mini 32      (DeepSpeed on its CPU accelerator)

Every process builds the same global batch of 64 episodes (fixed seed: queries, responses of
different lengths, old logprobs, values, advantages, returns) and takes its share of the rows; one
optimiser step of plain SGD follows (Adam's first step would hide a wrongly scaled gradient), with
one PPO epoch. The main process writes the updated parameters. It also checks, on its shard, that
globally whitened advantages equal the whitening of the whole batch, and says so in OUT_FILE.json.
"""

from __future__ import annotations

import argparse
import json

import torch
from safetensors.torch import save_file

from rlhfkit.algos.masked import masked_whiten
from rlhfkit.config.stages import PPOConfig
from rlhfkit.models.actor_critic import ActorCritic
from rlhfkit.models.load import disable_dropout, load_causal_lm, load_reward_model, load_tokenizer
from rlhfkit.models.packed_attention import use_packed_attention
from rlhfkit.config.sections import ModelSection
from rlhfkit.rollout.types import Experience
from rlhfkit.training.distributed import Collectives, configure_deepspeed, exit_launched_process, launched_processes
from rlhfkit.training.faults import FaultGuard
from rlhfkit.training.loop import make_accelerator
from rlhfkit.training.micro_batches import step_micro_batches
from rlhfkit.training.ppo_update import ppo_update
from rlhfkit.training.sharded import whole_weights

BATCH, TQ, TR = 64, 5, 7


def fixed_batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    query = torch.randint(3, vocab, (BATCH, TQ), generator=g)
    query_mask = torch.ones(BATCH, TQ, dtype=torch.long)
    query_mask[::3, :2] = 0  # some prompts are shorter (left padding)
    lengths = torch.randint(1, TR + 1, (BATCH,), generator=g)  # responses of 1..TR tokens
    response_mask = (torch.arange(TR).unsqueeze(0) < lengths.unsqueeze(1)).long()
    response = torch.randint(3, vocab, (BATCH, TR), generator=g).masked_fill(response_mask == 0, 1)
    m = response_mask.float()
    return {
        "query_ids": query, "query_mask": query_mask, "response_ids": response, "response_mask": response_mask,
        "ended_with_eos": lengths < TR,
        "logprobs": (-torch.rand(BATCH, TR, generator=g) * 3 - 0.5) * m,  # off-policy: ratios ≠ 1, some clipped
        "ref_logprobs": torch.zeros(BATCH, TR), "entropy": torch.zeros(BATCH, TR),
        "values": torch.randn(BATCH, TR, generator=g) * m, "scores": torch.randn(BATCH, generator=g),
        "kl": torch.zeros(BATCH, TR), "rewards": torch.zeros(BATCH, TR),
        "advantages": torch.randn(BATCH, TR, generator=g) * m, "returns": torch.randn(BATCH, TR, generator=g) * m,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out")
    parser.add_argument("--mini", type=int, required=True)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=None, help="ppo.micro_batch_tokens (empty: fixed micro-batches)")
    args = parser.parse_args()

    torch.manual_seed(0)
    ppo = PPOConfig(batch_size=BATCH, mini_batch_size=args.mini, gradient_accumulation_steps=args.accumulation,
                    micro_batch_tokens=args.tokens, ppo_epochs=1, max_grad_norm=None, vf_coef=0.5, entropy_coef=0.01, clip_range_value=0.2)
    accelerator = make_accelerator("auto", "no", args.accumulation)
    world, rank = accelerator.num_processes, accelerator.process_index
    sharded = accelerator.distributed_type.value
    section = ModelSection(name_or_path=args.model_dir)
    tokenizer = load_tokenizer(section, "policy")
    policy = disable_dropout(load_causal_lm(section, tokenizer, "policy"))
    critic = disable_dropout(load_reward_model(section, tokenizer, "critic"))
    batch = fixed_batch(policy.config.vocab_size)
    share = BATCH // world
    rows = slice(rank * share, (rank + 1) * share)
    exp = Experience(**{k: v[rows] for k, v in batch.items()}, prompts=[""] * share, responses=[""] * share)

    collectives = Collectives(accelerator.device)
    whitened = masked_whiten(exp.advantages, exp.response_mask, all_sum=collectives.sum)
    expected = masked_whiten(batch["advantages"], batch["response_mask"])[rows]
    local_error = (whitened - expected)[exp.response_mask.bool()].abs().max()
    whitening_error = float(collectives.max(local_error))  # the worst shard

    if args.tokens:  # as the PPO stage does under a token budget: packed rows attend row by row
        use_packed_attention(policy)
        use_packed_attention(critic)
    actor_critic = ActorCritic(policy, critic)
    optimizer = torch.optim.SGD(actor_critic.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    configure_deepspeed(accelerator, args.mini, args.accumulation, ppo.max_grad_norm)
    actor_critic, optimizer = accelerator.prepare(actor_critic, optimizer)
    order = torch.randperm(share, generator=torch.Generator().manual_seed(rank))  # the (only) epoch's shuffle
    counts = torch.zeros(world, dtype=torch.long)  # micro-batches each process runs (they differ under a token budget)
    counts[rank] = len(step_micro_batches(order, exp.query_mask.sum(1), exp.response_mask.sum(1),
                                          args.mini, args.accumulation, args.tokens)[0])
    micro_batch_counts = collectives.sum(counts).tolist()
    result = ppo_update(exp, actor_critic, optimizer, scheduler, accelerator, ppo, torch.Generator(), collectives,
                        FaultGuard("ppo", 3), iteration=1, first_order=order)
    module = accelerator.unwrap_model(actor_critic)
    weights = whole_weights(accelerator, module) or module.state_dict()  # FSDP: gathered from the shards
    if accelerator.is_main_process:
        save_file({k: v.detach().contiguous() for k, v in weights.items()
                   if "lm_head" not in k}, args.out)  # lm_head is tied to the embeddings
        with open(args.out + ".json", "w") as handle:
            json.dump({"whitening_error": whitening_error, "fault": result.fault, "stats": result.stats, "world": world,
                       "distributed_type": sharded, "micro_batches": micro_batch_counts}, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
    if (launched_processes() or 1) > 1:
        exit_launched_process(0)  # as the CLI does: gloo's threads must not meet interpreter finalization
