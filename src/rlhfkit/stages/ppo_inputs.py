"""What PPO reads before it trains, and the checks made before any model is loaded.

`validate` (the CLI calls it before anything else), the refresh settings' checks, the prompts as the
policy sees them, the context-length check, which checkpoints the reference and the critic start
from, and the seeded prompt order (`PromptSampler`, the same on every process).
"""

from __future__ import annotations

import torch

from rlhfkit.config.load import ConfigError
from rlhfkit.config.sections import ModelSection
from rlhfkit.config.stages import PPOConfig, RunConfig
from rlhfkit.data.records import load_records
from rlhfkit.data.templates import render_prompt
from rlhfkit.data.tokenize import TruncationStats, tokenize_prompts
from rlhfkit.evaluation.during_ppo import check_held_out
from rlhfkit.models.load import check_model_source, load_tokenizer
from rlhfkit.models.lora import require_peft
from rlhfkit.rewards.refresh import import_labeler
from rlhfkit.rewards.sources import import_reward_callable
from rlhfkit.rollout.vllm_backend import require_vllm
from rlhfkit.training.progress import console


def reference_section(ppo: PPOConfig) -> ModelSection:
    return ppo.reference if ppo.reference.name_or_path else ppo.policy


def value_section(ppo: PPOConfig, tokenizer) -> ModelSection:
    """Critic initialisation: explicit path, else the first reward model (N+ detail 18), else the policy.

    The critic reads the *policy's* token ids, so a reward model with another vocabulary cannot
    be its starting point (its embeddings would be indexed by the wrong ids): then the policy is.
    """
    if ppo.value_model.name_or_path:
        return ppo.value_model
    source = ppo.policy.name_or_path
    if ppo.reward.model_paths:
        rm_tokenizer = load_tokenizer(ModelSection(name_or_path=ppo.reward.model_paths[0]), "ppo.reward.model_paths[0]",
                                      encoder_ok=True)
        if rm_tokenizer.get_vocab() == tokenizer.get_vocab():
            source = ppo.reward.model_paths[0]
        else:
            console.print("\\[ppo] the reward model's vocabulary differs from the policy's: the critic starts from the policy")
    return ppo.value_model.model_copy(update={"name_or_path": source})


def validate(cfg: RunConfig) -> None:
    """Everything that can be checked before any model is loaded."""
    ppo = cfg.ppo
    check_model_source(ppo.policy, "ppo.policy")
    if ppo.lora is not None or ppo.value_lora is not None:
        require_peft("ppo.lora" if ppo.lora is not None else "ppo.value_lora")
    if not ppo.data.path:
        raise ConfigError("ppo.data.path is empty: give a JSONL file of {prompt} records")
    load_records(ppo.data.path, "prompts", ppo.data.columns)
    if ppo.reward.callable:
        import_reward_callable(ppo.reward.callable)
    elif not ppo.reward.model_paths:
        raise ConfigError("ppo.reward: give model_paths (reward-model checkpoints) or callable")
    for i, path in enumerate(ppo.reward.model_paths):
        check_model_source(ModelSection(name_or_path=path), f"ppo.reward.model_paths[{i}]")
    if ppo.generation.backend == "vllm":
        require_vllm()
    validate_refresh(ppo, labeler_given=False)
    check_held_out(ppo, task_given=False)


def validate_refresh(ppo: PPOConfig, labeler_given: bool) -> None:
    refresh = ppo.reward_refresh
    if refresh.every is None:
        return
    if ppo.reward.callable:
        raise ConfigError("ppo.reward_refresh needs reward models to fine-tune; ppo.reward.callable is not trained")
    if refresh.labeler == "task" and not labeler_given:
        raise ConfigError("ppo.reward_refresh.labeler 'task' needs the bundled task (rlhfkit run with task:); "
                          "give 'module:function' or 'file' instead")
    if ":" in refresh.labeler:
        import_labeler(refresh.labeler)
    for name in ("old_data", "eval_data"):
        if (path := getattr(refresh, name)) is not None:
            load_records(path, "preferences")


def load_prompts(ppo: PPOConfig, tokenizer) -> tuple[list[str], list[list[int]], TruncationStats, list]:
    """Prompt texts as the policy sees them (chat template applied to chat records), their ids, and the
    records (a reward model with its own tokenizer renders them its own way: rewards/sources.py)."""
    records = load_records(ppo.data.path, "prompts", ppo.data.columns)
    if ppo.data.max_examples:
        records = records[: ppo.data.max_examples]
    stats = TruncationStats()
    ids = tokenize_prompts(records, tokenizer, ppo.generation.max_prompt_length, stats)
    if stats.dropped:
        raise ConfigError(f"{ppo.data.path}: {stats.dropped} prompt(s) tokenize to nothing")
    return [render_prompt(tokenizer, r) for r in records], ids, stats, records


def check_fits_context(ppo: PPOConfig, prompt_ids: list[list[int]], limit: int | None) -> None:
    """The longest prompt plus the response budget must fit the policy's positions: otherwise
    generation fails with an index error in the middle of a rollout."""
    longest = max((len(ids) for ids in prompt_ids), default=0)
    if limit is not None and longest + ppo.generation.max_new_tokens > limit:
        raise ConfigError(
            f"{ppo.data.path}: the longest prompt ({longest} tokens) + ppo.generation.max_new_tokens "
            f"({ppo.generation.max_new_tokens}) = {longest + ppo.generation.max_new_tokens} is more than the policy's "
            f"{limit} positions: lower ppo.generation.max_prompt_length (prompts are cut from the left) or max_new_tokens")


class PromptSampler:
    """Cycles through the prompts in a freshly shuffled order each pass (seeded)."""

    def __init__(self, n: int, seed: int):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self, k: int) -> list[int]:
        picked = []
        while len(picked) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
            picked.append(self.order.pop())
        return picked

    def state_dict(self) -> dict[str, list[int]]:
        """The rest of the current pass (the generator's state is checkpointed with the other RNGs)."""
        return {"order": list(self.order)}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        self.order = [int(i) for i in state["order"]]
