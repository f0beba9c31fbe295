"""What the monitor suggests for each rule, read against the run's config.

Without a config (`rlhfkit diagnose` on a run made elsewhere) each rule has its general advice
(`SUGGESTIONS`). With one, every clause looks at the setting it names and says what to do with
the value the run has: "missing_eos_penalty is already 1: raise it, or raise max_new_tokens (now
24)" instead of "set missing_eos_penalty" to a run that has set it; a KL remedy names the knob the
run actually has (the adaptive controller's target, or the fixed β); a switch already on is not
suggested again.
"""

from __future__ import annotations

from collections.abc import Callable

from rlhfkit.config.stages import RunConfig

SUGGESTIONS = {
    "non_finite": "stop and resume from the last checkpoint; lower ppo.learning_rate, keep ppo.max_grad_norm set, "
                  "and prefer bf16/fp32 over fp16 (ppo.policy.dtype).",
    "reward_hacking": "raise ppo.kl.kl_coef (or lower ppo.kl.target), score with an RM ensemble and "
                      "ppo.reward.ensemble: min|uncertainty, refresh the reward model on current policy samples, "
                      "or stop and keep the checkpoint with the best gold/held-out score.",
    "kl_blowup": "raise ppo.kl.kl_coef (or lower ppo.kl.target), lower ppo.learning_rate, or set ppo.target_kl "
                 "to cut the update epochs short.",
    "reward_collapse": "raise ppo.generation.temperature for more diverse samples and check the reward function "
                       "(constant scores? ppo.reward.clip too tight? wrong normalisation stats?).",
    "entropy_collapse": "set ppo.entropy_coef > 0 or raise ppo.generation.temperature, and raise ppo.kl.kl_coef "
                        "to pull the policy back towards the reference.",
    "value_loss_explosion": "lower ppo.value_learning_rate, keep value clipping on (ppo.clip_range_value), and "
                            "normalise/clip rewards (ppo.reward.normalize, ppo.reward.clip).",
    "high_clipfrac": "lower ppo.learning_rate or ppo.ppo_epochs, or set ppo.target_kl.",
    "ratio_outlier": "lower ppo.learning_rate; check that dropout is off (policy/first_minibatch_ratio_dev "
                     "should be 0) and that logprobs use the sampling temperature.",
    "missing_eos": "set ppo.reward.missing_eos_penalty, or raise ppo.generation.max_new_tokens.",
}


def _g(x: float) -> str:
    return f"{x:g}"


def _stronger_kl(cfg: RunConfig) -> str:
    kl = cfg.ppo.kl
    if kl.adaptive:
        return f"lower ppo.kl.target (now {_g(kl.target)} nats; the adaptive controller then raises β)"
    if kl.kl_coef == 0:
        return "ppo.kl.kl_coef is 0, so nothing holds the policy near the reference: set it (e.g. 0.05)"
    return f"raise ppo.kl.kl_coef (now {_g(kl.kl_coef)}, fixed)"


def _lower_lr(cfg: RunConfig) -> str:
    return f"lower ppo.learning_rate (now {_g(cfg.ppo.learning_rate)})"


def _target_kl(cfg: RunConfig) -> str:
    if cfg.ppo.target_kl is None:
        return "set ppo.target_kl (approx. KL per token, e.g. 0.1) to cut the update epochs short"
    return f"lower ppo.target_kl (now {_g(cfg.ppo.target_kl)})"


def _temperature(cfg: RunConfig) -> str:
    return f"raise ppo.generation.temperature (now {_g(cfg.ppo.generation.temperature)})"


def _non_finite(cfg: RunConfig) -> list[str]:
    ppo = cfg.ppo
    out = ["stop and resume from the last checkpoint", _lower_lr(cfg)]
    out.append("set ppo.max_grad_norm (e.g. 1.0)" if ppo.max_grad_norm is None
               else f"ppo.max_grad_norm is already {_g(ppo.max_grad_norm)}: lower it")
    fp16 = [name for name, value in (("ppo.policy.dtype", ppo.policy.dtype), ("mixed_precision", cfg.mixed_precision))
            if value == "fp16"]
    if fp16:
        out.append(f"{' and '.join(fp16)} is fp16, which overflows easily: use bf16 or fp32")
    return out


def _reward_hacking(cfg: RunConfig) -> list[str]:
    ppo = cfg.ppo
    out = [_stronger_kl(cfg)]
    if not ppo.reward.callable:
        members = len(ppo.reward.model_paths) or cfg.rm.ensemble_size
        if members <= 1:
            out.append("train a reward-model ensemble (rm.ensemble_size, e.g. 3) and combine it with "
                       "ppo.reward.ensemble: min or uncertainty")
        elif ppo.reward.ensemble == "mean":
            out.append(f"combine the {members} reward models with ppo.reward.ensemble: min or uncertainty (now mean)")
        elif ppo.reward.ensemble == "uncertainty":
            out.append(f"raise ppo.reward.uncertainty_penalty (now {_g(ppo.reward.uncertainty_penalty)})")
        every = ppo.reward_refresh.every
        out.append("refresh the reward model on the policy's own samples (ppo.reward_refresh.every)" if every is None
                   else f"refresh the reward model more often (ppo.reward_refresh.every is {every})")
    watched = ppo.early_stopping.metric
    if watched is None:
        metric = "eval/gold_score" if ppo.eval.every is not None and cfg.task is not None else "gold/score or eval/*"
        out.append(f"stop on a trustworthy score (ppo.early_stopping.metric: {metric}) and keep ppo/best_policy")
    else:
        out.append(f"ppo.early_stopping already watches {watched}: keep ppo/best_policy, or lower "
                   f"ppo.early_stopping.patience (now {ppo.early_stopping.patience})")
    return out


def _kl_blowup(cfg: RunConfig) -> list[str]:
    return [_stronger_kl(cfg), _lower_lr(cfg), _target_kl(cfg)]


def _reward_collapse(cfg: RunConfig) -> list[str]:
    reward = cfg.ppo.reward
    out = [_temperature(cfg) + " for more diverse samples"]
    if reward.clip is not None:
        out.append(f"ppo.reward.clip is ±{_g(reward.clip)}: scores may all sit at the clip, loosen or remove it")
    if reward.callable:
        out.append(f"check that ppo.reward.callable ({reward.callable}) does not return the same score for everything")
    else:
        out.append("check the reward model: does it score different responses differently?"
                   + (" (ppo.reward.normalize uses the mean/std stored with the checkpoint)" if reward.normalize else ""))
    return out


def _entropy_collapse(cfg: RunConfig) -> list[str]:
    coef = cfg.ppo.entropy_coef
    bonus = "set ppo.entropy_coef > 0 (e.g. 0.01)" if coef == 0 else f"raise ppo.entropy_coef (now {_g(coef)})"
    return [bonus, _temperature(cfg), _stronger_kl(cfg) + " to pull the policy back towards the reference"]


def _value_loss_explosion(cfg: RunConfig) -> list[str]:
    ppo = cfg.ppo
    out = [f"set ppo.value_learning_rate below ppo.learning_rate (the critic trains at {_g(ppo.learning_rate)} now)"
           if ppo.value_learning_rate is None else f"lower ppo.value_learning_rate (now {_g(ppo.value_learning_rate)})"]
    out.append("turn value clipping on (ppo.clip_range_value, e.g. 0.2)" if ppo.clip_range_value is None
               else f"tighten value clipping (ppo.clip_range_value is {_g(ppo.clip_range_value)})")
    if not ppo.reward.callable and not ppo.reward.normalize:
        out.append("turn ppo.reward.normalize on")
    out.append("clip the scores (ppo.reward.clip, e.g. 5)" if ppo.reward.clip is None
               else f"lower ppo.reward.clip (now {_g(ppo.reward.clip)})")
    return out


def _high_clipfrac(cfg: RunConfig) -> list[str]:
    out = [_lower_lr(cfg)]
    if cfg.ppo.ppo_epochs > 1:
        out.append(f"lower ppo.ppo_epochs (now {cfg.ppo.ppo_epochs})")
    return [*out, _target_kl(cfg)]


def _ratio_outlier(cfg: RunConfig) -> list[str]:
    generation = cfg.ppo.generation
    out = [_lower_lr(cfg)]
    if generation.top_k != 0 or generation.top_p != 1.0:
        out.append(f"sample without filtering (ppo.generation.top_k is {generation.top_k}, top_p {_g(generation.top_p)}): "
                   "filtered sampling makes the sampler's probabilities differ from the logprobs PPO computes")
    else:
        out.append("rlhfkit turns dropout off and computes logprobs at the sampling temperature, so look at "
                   "policy/first_minibatch_ratio_dev (0 when the first mini-batch is on-policy)")
    return out


def _missing_eos(cfg: RunConfig) -> list[str]:
    penalty, budget = cfg.ppo.reward.missing_eos_penalty, cfg.ppo.generation.max_new_tokens
    if penalty is None:
        return [f"set ppo.reward.missing_eos_penalty (e.g. 1.0), or raise ppo.generation.max_new_tokens (now {budget})"]
    return [f"ppo.reward.missing_eos_penalty is already {_g(penalty)}: raise it, or raise "
            f"ppo.generation.max_new_tokens (now {budget})"]


_FOR_CONFIG: dict[str, Callable[[RunConfig], list[str]]] = {
    "non_finite": _non_finite, "reward_hacking": _reward_hacking, "kl_blowup": _kl_blowup,
    "reward_collapse": _reward_collapse, "entropy_collapse": _entropy_collapse,
    "value_loss_explosion": _value_loss_explosion, "high_clipfrac": _high_clipfrac,
    "ratio_outlier": _ratio_outlier, "missing_eos": _missing_eos,
}


def suggestion(rule: str, cfg: RunConfig | None = None) -> str:
    """The advice for `rule`: read against `cfg` when given, the general text otherwise."""
    if cfg is None:
        return SUGGESTIONS[rule]
    return "; ".join(_FOR_CONFIG[rule](cfg)) + "."


__all__ = ["SUGGESTIONS", "suggestion"]
