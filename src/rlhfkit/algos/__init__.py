"""Pure RLHF maths: tensors in, tensors (and float stats) out. Imports only torch."""

from rlhfkit.algos.advantages import compute_gae, token_level_rewards
from rlhfkit.algos.kl import AdaptiveKLController, FixedKLController, exact_kl_from_logits, kl_per_token
from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits
from rlhfkit.algos.losses import pairwise_loss, ppo_policy_loss, reward_centering_loss, sft_loss, value_loss
from rlhfkit.algos.masked import masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "masked_sum",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "logprobs_from_logits",
    "entropy_from_logits",
    "kl_per_token",
    "exact_kl_from_logits",
    "FixedKLController",
    "AdaptiveKLController",
    "token_level_rewards",
    "compute_gae",
    "pairwise_loss",
    "reward_centering_loss",
    "sft_loss",
    "ppo_policy_loss",
    "value_loss",
]
