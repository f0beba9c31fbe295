"""KL divergence between the policy and the frozen reference, and the KL coefficient.

Direction: everything here targets KL(pi || pi_ref) = E_{y ~ pi}[log pi(y) - log pi_ref(y)],
the penalty in R = r - beta * log(pi / pi_ref) (Ziegler et al. 2019, Stiennon et al.
2020). Tokens are sampled from the policy pi, so the per-token estimators below are
expectations under pi.

Per-token estimators (Schulman 2020, "Approximating KL Divergence"). Schulman samples
x ~ q and sets r = p / q; in our notation q = pi (policy, the sampler) and p = pi_ref,
so with ``logr = logprobs - ref_logprobs`` = log(pi / pi_ref) = -log r:
- k1 = logr                        unbiased, high variance, negative on ~half the tokens.
- k2 = 0.5 * logr**2               biased, low variance, right to second order.
- k3 = exp(-logr) - 1 + logr       = (r - 1) - log r; unbiased and >= 0.
The PPO reward penalty in Ziegler / N+ / TRL uses k1; that stays the default.
We do not clamp ``logr``: k3 overflows to inf for logr < about -88 in float32, which
means pi gave a sampled token ~e^-88 of pi_ref's probability; callers mask padding
(where both logprobs should hold the same placeholder) before reducing.

``exact_kl_from_logits`` sums over the whole vocabulary instead of using the sampled
token. The order of the arguments matters: the seed code used
``F.kl_div(policy_probs.log(), ref_probs)``, which computes KL(pi_ref || pi), the
reverse direction.

KL coefficient controllers: ``FixedKLController`` (N+ and Stiennon: beta = 0.05) and
``AdaptiveKLController`` in the form of openai/lm-human-preferences (Ziegler 2019):
    beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon).
The paper writes the gain as K_beta = 0.1; the code (and we) use n_steps / horizon.
``current_kl`` should be the batch mean of the per-sequence sum of k1.
"""

from __future__ import annotations

import torch

__all__ = [
    "kl_per_token",
    "exact_kl_from_logits",
    "FixedKLController",
    "AdaptiveKLController",
]

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """(B, T) per-token estimate of KL(pi || pi_ref) from sampled-token logprobs (both (B, T))."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    logr = logprobs - ref_logprobs
    if estimator == "k1":
        return logr
    if estimator == "k2":
        return 0.5 * logr.square()
    # k3 = (r - 1) - log r with r = pi_ref / pi = exp(-logr).
    return torch.expm1(-logr) + logr


def exact_kl_from_logits(logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, T) exact KL(pi || pi_ref) = sum_v pi(v) (log pi(v) - log pi_ref(v)).

    ``logits`` are the policy's, ``ref_logits`` the reference's, both (B, T, V) and
    both divided by the same ``temperature``. Computed in float32 at least.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logp = torch.log_softmax(logits.to(dtype) / temperature, dim=-1)
    ref_logp = torch.log_softmax(ref_logits.to(dtype) / temperature, dim=-1)
    probs = logp.exp()
    # Terms with pi(v) = 0 contribute 0; the where also avoids -inf - -inf = NaN there.
    diff = torch.where(probs > 0, logp - ref_logp, torch.zeros((), dtype=dtype, device=logp.device))
    return (probs * diff).sum(dim=-1)


class FixedKLController:
    """A constant KL coefficient beta; ``update`` is a no-op kept for a uniform interface."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller steering the measured KL towards ``target`` (Ziegler 2019).

    ``n_steps`` is the number of episodes (sequences) in the batch just measured and
    ``horizon`` the number of episodes over which an error is corrected (10000 in
    Ziegler). The relative error is clipped to +-0.2 so one outlier batch cannot
    move beta by more than 0.2 * n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        # Restores exactly what state_dict saved, target and horizon included.
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))
