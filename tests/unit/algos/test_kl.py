"""KL estimators against closed forms, exact KL direction, and the KL controllers."""

import math

import pytest
import torch

from rlhfkit.algos.kl import AdaptiveKLController, FixedKLController, exact_kl_from_logits, kl_per_token

# Policy p (the sampler) and reference q over 5 outcomes.
P = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
Q = torch.full((5,), 0.2, dtype=torch.float64)
# log(p/q) = [ln 2, ln 1.5, ln 0.75, ln 0.5, ln 0.25] = [.69315, .40547, -.28768, -.69315, -1.38629]
# KL(p||q) = .4*.69315 + .3*.40547 + .15*(-.28768) + .1*(-.69315) + .05*(-1.38629)
#          = .27726 + .12164 - .04315 - .06931 - .06931 = 0.217117
KL_PQ = 0.2171167
# KL(q||p) = .2 * (ln .5 + ln(2/3) + ln(4/3) + ln 2 + ln 4) = .2 * 1.268511 = 0.253702
KL_QP = 0.2537023
# 0.5 * E_p[log(p/q)^2] = .5 * (.4*.48045 + .3*.16440 + .15*.08276 + .1*.48045 + .05*1.92181) = 0.199026
HALF_E_LOGR2 = 0.1990259
N_SAMPLES = 200_000


def _sample_logr():
    g = torch.Generator().manual_seed(1234)
    idx = torch.multinomial(P, N_SAMPLES, replacement=True, generator=g)
    return P.log()[idx], Q.log()[idx]


def _within_mc_error(samples: torch.Tensor, truth: float, n_se: float = 5.0) -> None:
    # Monte-Carlo tolerance: n_se standard errors of the sample mean (sd / sqrt(N)).
    # For k1 here sd = 0.59, se = 0.0013, so 5 se = 0.0066: loose enough for any seed
    # (the draw is seeded anyway), tight enough that E[k2] = 0.199 would not pass for
    # the KL 0.217.
    se = samples.std().item() / math.sqrt(samples.numel())
    assert abs(samples.mean().item() - truth) < n_se * se, (samples.mean().item(), truth, se)


def test_closed_form_constants():
    assert (P * (P / Q).log()).sum().item() == pytest.approx(KL_PQ, abs=1e-6)
    assert (Q * (Q / P).log()).sum().item() == pytest.approx(KL_QP, abs=1e-6)
    assert (0.5 * P * (P / Q).log().square()).sum().item() == pytest.approx(HALF_E_LOGR2, abs=1e-6)


def test_k1_k2_k3_match_closed_forms_under_policy_samples():
    logprobs, ref_logprobs = _sample_logr()
    k1 = kl_per_token(logprobs, ref_logprobs, "k1")
    k2 = kl_per_token(logprobs, ref_logprobs, "k2")
    k3 = kl_per_token(logprobs, ref_logprobs, "k3")
    _within_mc_error(k1, KL_PQ)
    _within_mc_error(k3, KL_PQ)
    _within_mc_error(k2, HALF_E_LOGR2)  # k2 is biased: its mean is 0.5 E[logr^2], not the KL
    assert (k3 >= 0).all()
    assert (k1 < 0).any()  # k1 is negative whenever pi < pi_ref for the sampled token
    # per-token values, e.g. outcome 0: logr = ln 2 -> k3 = 1/2 - 1 + ln 2 = 0.193147
    k3_one = kl_per_token(torch.tensor([math.log(0.4)]), torch.tensor([math.log(0.2)]), "k3")
    assert k3_one.item() == pytest.approx(0.193147, abs=1e-5)


def test_schulman_gaussian_table_row():
    # Schulman 2020, row "p=N(1,1), q=N(0,1)": sampler q -> our policy N(0,1), ref N(1,1).
    # logr = log N(x;0,1) - log N(x;1,1) = 0.5 - x, true KL = 0.5.
    # Table (bias/true, std/true): k1 0/2, k2 0.25/1.73, k3 0/1.70.
    x = torch.randn(N_SAMPLES, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    logprobs, ref_logprobs = -0.5 * x.square(), -0.5 * (x - 1).square()
    true_kl = 0.5
    # Exact std/true: k1 1/0.5 = 2; k2 = y^2/2 with y ~ N(0.5, 1), Var(y^2) = 2 + 4 * 0.25 = 3
    # -> sqrt(3)/2 / 0.5 = 1.732; k3 = e^(x-0.5) - x - 0.5, Var = (e - 1) + 1 - 2 = 0.718
    # -> 0.8475 / 0.5 = 1.695.
    # Tolerances: the bias ratio is a mean with se <= 0.85 / sqrt(2e5) / 0.5 = 0.004, so 0.02
    # is 5 se. The sample std of k1/k2 has relative se < 0.3%, so 0.03 covers the table's
    # rounding; k3 contains a lognormal term (kurtosis ~110), whose std estimate has a
    # relative se of sqrt(110 / 2e5) / 2 = 1.2%, so it gets 0.06 (~3 se).
    for name, bias, std, std_tol in [("k1", 0.0, 2.0, 0.03), ("k2", 0.25, 1.73, 0.03), ("k3", 0.0, 1.70, 0.06)]:
        k = kl_per_token(logprobs, ref_logprobs, name)
        assert (k.mean().item() - true_kl) / true_kl == pytest.approx(bias, abs=0.02), name
        assert k.std().item() / true_kl == pytest.approx(std, abs=std_tol), name


def test_unknown_estimator_raises_and_names_it():
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(torch.zeros(1), torch.zeros(1), estimator="k4")


def test_exact_kl_matches_closed_form_and_direction():
    logits = P.log().float().reshape(1, 1, 5)
    ref_logits = Q.log().float().reshape(1, 1, 5) + 3.0  # a constant shift does not change softmax
    forward = exact_kl_from_logits(logits, ref_logits)
    assert forward.shape == (1, 1)
    assert forward.item() == pytest.approx(KL_PQ, abs=1e-5)
    reverse = exact_kl_from_logits(ref_logits, logits)
    assert reverse.item() == pytest.approx(KL_QP, abs=1e-5)
    assert abs(forward.item() - reverse.item()) > 0.03  # not symmetric


def test_exact_kl_with_temperature_and_identity():
    g = torch.Generator().manual_seed(0)
    logits, ref_logits = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 6, generator=g)
    p = torch.softmax(logits / 0.7, -1)
    q = torch.softmax(ref_logits / 0.7, -1)
    expected = (p * (p.log() - q.log())).sum(-1)
    torch.testing.assert_close(exact_kl_from_logits(logits, ref_logits, 0.7), expected)
    assert torch.equal(exact_kl_from_logits(logits, logits), torch.zeros(2, 3))
    # a token the policy can never emit (-inf logit) contributes 0, not NaN
    blocked = logits.clone()
    blocked[..., 0] = float("-inf")
    assert torch.isfinite(exact_kl_from_logits(blocked, ref_logits)).all()


def test_broken_variant_kl_div_is_the_wrong_direction():
    """The seed's F.kl_div(policy.log(), ref) computes KL(ref || policy); it must miss KL(p || q)."""
    seed_style = torch.nn.functional.kl_div(P.log(), Q, reduction="sum").item()
    assert seed_style == pytest.approx(KL_QP, abs=1e-6)
    assert abs(seed_style - KL_PQ) > 0.03


def test_adaptive_controller_reference_numbers():
    # KL 12, target 6: error = 12/6 - 1 = 1 -> clipped to 0.2; 0.2 * 512 / 10000 = 0.01024
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 512)
    assert ctl.value == pytest.approx(0.2 * 1.01024, rel=1e-9)
    # KL 3: error = 3/6 - 1 = -0.5 -> clipped to -0.2 -> x 0.98976
    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    ctl.update(3.0, 512)
    assert ctl.value == pytest.approx(0.2 * 0.98976, rel=1e-9)
    # KL 100: error 15.67 is clipped to +0.2, the same step as KL 12
    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    ctl.update(100.0, 512)
    assert ctl.value == pytest.approx(0.2 * 1.01024, rel=1e-9)
    # KL 6.6 is inside the clip: error 0.1 -> x (1 + 0.1 * 0.0512) = x 1.00512
    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    ctl.update(6.6, 512)
    assert ctl.value == pytest.approx(0.2 * 1.00512, rel=1e-9)
    # Broken variant: without the clip, KL 12 would give x (1 + 1 * 0.0512) = x 1.0512
    unclipped = 0.2 * (1 + (12.0 / 6.0 - 1) * 512 / 10000)
    assert unclipped != pytest.approx(0.2 * 1.01024, rel=1e-4)


def test_controllers_state_dict_roundtrip():
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 512)
    assert fixed.value == 0.05
    assert fixed.state_dict() == {"value": 0.05}

    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    ctl.update(12.0, 512)
    state = ctl.state_dict()
    assert all(isinstance(v, float) for v in state.values())
    other = AdaptiveKLController(1.0, 1.0, 1.0)
    other.load_state_dict(state)
    assert other.state_dict() == state
    other.update(3.0, 512)
    ctl.update(3.0, 512)
    assert other.value == ctl.value
    with pytest.raises(ValueError):
        AdaptiveKLController(0.2, 0.0, 10000)
