"""Every PPO metric name, defined once.

The stage writes these keys into metrics.jsonl; the monitor, early stopping, the KL controller's
input and the report read them. Referring to `M.KL` instead of the string "objective/kl" turns a
typo into an AttributeError at import time instead of a plot or a health check that silently never
fires. Names follow TRL's PPO (`objective/…`, `policy/…`, `loss/…`) where it has one, so curves
compare across frameworks; docs/ppo.md gives each one's meaning and healthy range.
"""

from __future__ import annotations


class M:
    # objective/ — the RL objective, per episode (means over the whole batch, every process)
    KL = "objective/kl"  # Σ_t KL_t per response: the KL controller's input
    ENTROPY_SEQ = "objective/entropy"
    SCORES = "objective/scores"  # reward-source score (penalties applied)
    SCORES_STD = "objective/scores_std"
    NON_SCORE_REWARD = "objective/non_score_reward"  # −β·Σ_t KL_t
    RLHF_REWARD = "objective/rlhf_reward"  # score − β·KL
    # policy/ — the policy and its update
    ENTROPY_TOKEN = "policy/entropy_avg"
    ENTROPY_TRAIN = "policy/entropy_train_avg"
    CLIPFRAC = "policy/clipfrac_avg"
    APPROX_KL = "policy/approxkl_avg"
    FIRST_RATIO_DEV = "policy/first_minibatch_ratio_dev"  # must be 0 with dropout off (N+ detail 6)
    EPOCHS_RUN = "policy/epochs_run"
    # loss/
    POLICY_LOSS = "loss/policy_avg"
    VALUE_LOSS = "loss/value_avg"
    # val/ — TRL's names for the ratio and the value clipping
    RATIO = "val/ratio"
    RATIO_VAR = "val/ratio_var"
    RATIO_MAX = "val/ratio_max"
    VALUE_CLIPFRAC = "val/clipfrac_avg"
    # value/ — the critic
    VALUE_MEAN = "value/mean"
    ADVANTAGE_STD = "value/advantage_std"
    EXPLAINED_VARIANCE = "value/explained_variance"
    # rollout/
    RESPONSE_LENGTH = "rollout/response_length"
    EOS_FRACTION = "rollout/eos_fraction"
    GENERATED_TOKENS = "rollout/generated_tokens"  # valid response tokens this iteration, all processes
    # reward/ and gold/
    ENSEMBLE_DISAGREEMENT = "reward/ensemble_disagreement"
    GOLD_SCORE = "gold/score"  # a bundled task's hidden judge, never part of the reward
    # eval/ — held-out prompts every ppo.eval.every iterations (evaluation/during_ppo.py), means per response
    EVAL_KL = "eval/kl"  # exact Σ_t KL(π‖π_ref) over the vocabulary, at eval.temperature
    EVAL_PROXY_SCORE = "eval/proxy_score"  # the reward source's score (no missing-EOS penalty)
    EVAL_GOLD_SCORE = "eval/gold_score"  # a bundled task's gold judge
    EVAL_RESPONSE_LENGTH = "eval/response_length"
    # schedule
    KL_COEF = "kl_coef"
    LR = "lr"
    EPISODE = "episode"
    # timing/ — seconds per phase, and throughput
    TIME_GENERATION = "timing/generation"
    TIME_SCORING = "timing/scoring"  # reward scoring + experience forwards + GAE
    TIME_TRAINING = "timing/training"
    TIME_EVAL = "timing/eval"  # the held-out evaluation, on iterations that have one
    TIME_COLLECTIVES = "timing/collectives"  # time spent in cross-process reductions (update excluded)
    TOKENS_PER_SECOND = "timing/tokens_per_second"  # generated tokens / whole iteration time
    GENERATION_TOKENS_PER_SECOND = "timing/generation_tokens_per_second"
    # perf/ — model FLOPs per phase over the real tokens of every process (training/flops.py); timing/ — their MFU
    # against timing/peak_flops × processes, and real tokens per second. The update is timed as one phase: policy and
    # critic share its forward and backward.
    GENERATION_TFLOP = "perf/generation_tflop"
    EXPERIENCE_TFLOP = "perf/experience_tflop"  # policy + reference + critic + reward-model forwards
    POLICY_UPDATE_TFLOP = "perf/policy_update_tflop"
    CRITIC_UPDATE_TFLOP = "perf/critic_update_tflop"
    PEAK_FLOPS = "timing/peak_flops"  # per device: ppo.logging.peak_flops, a GPU's datasheet peak, or the measured CPU matmul ceiling
    GENERATION_MFU = "timing/generation_mfu"
    EXPERIENCE_MFU = "timing/experience_mfu"  # over timing/scoring (reward scoring + experience forwards + GAE)
    UPDATE_MFU = "timing/update_mfu"  # policy + critic update FLOPs over timing/training
    EXPERIENCE_TOKENS_PER_SECOND = "timing/experience_tokens_per_second"  # real (prompt + response) tokens / timing/scoring
    UPDATE_TOKENS_PER_SECOND = "timing/update_tokens_per_second"  # real tokens × epochs run / timing/training
    # memory/ — peaks so far, the largest over the processes
    PEAK_RSS_MB = "memory/peak_rss_mb"  # resident set of the process (interpreter and libraries included)
    PEAK_GPU_MB = "memory/peak_gpu_allocated_mb"  # torch.cuda.max_memory_allocated, on GPUs only


__all__ = ["M"]
