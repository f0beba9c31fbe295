"""Agreement and interval formulas against worked examples from the literature, and broken variants."""

from __future__ import annotations

import math

import pytest

from rlhfkit.label.agreement import (
    agreement_with_majority,
    cohen_kappa,
    krippendorff_alpha,
    mean_interval,
    wilson_interval,
)


def kappa_example() -> tuple[list[str], list[str]]:
    """The worked example of Wikipedia's "Cohen's kappa": 50 proposals, two readers;
    yes/yes 20, yes/no 5, no/yes 10, no/no 15."""
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    return a, b


def test_cohen_kappa_worked_example():
    # p_o = (20 + 15) / 50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4
    assert cohen_kappa(*kappa_example()) == pytest.approx(0.4, abs=1e-12)


def test_cohen_kappa_edge_cases():
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)  # p_o = 0, p_e = 0.5
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: 0/0
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_broken_kappa_with_pooled_marginals_fails():
    """Scott's pi (chance from the pooled label frequencies) is a different statistic: caught."""
    a, b = kappa_example()
    pooled_yes = (a.count("yes") + b.count("yes")) / 100  # 0.55
    p_e = pooled_yes**2 + (1 - pooled_yes) ** 2  # 0.505
    scott_pi = (0.7 - p_e) / (1 - p_e)  # 0.393939...
    assert scott_pi == pytest.approx(0.3939394, abs=1e-6)
    assert cohen_kappa(a, b) != pytest.approx(scott_pi, abs=1e-6)


def krippendorff_example() -> list[list[int]]:
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
    12 units, values 1–5, missing data (the unit's list holds only the values given)."""
    none = None
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, none, none, none],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, none, 3],
        [none, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, none],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, none],
    ]
    return [[v for v in unit if v is not None] for unit in zip(*observers)]


def test_krippendorff_alpha_nominal_worked_example():
    # Pairable values n = 40 (unit 12 has one value and drops out); marginals n_1..n_5 =
    # 9, 13, 10, 5, 3; matching coincidences sum to 32. alpha = 1 - (n-1)(n - 32) / (n^2 - sum n_c^2)
    # = 1 - 39 * 8 / (1600 - 384) = 1 - 312 / 1216 = 0.7434211 (the paper: 0.743).
    assert krippendorff_alpha(krippendorff_example(), "nominal") == pytest.approx(1 - 312 / 1216, abs=1e-12)


def test_krippendorff_alpha_ordinal_worked_example():
    assert krippendorff_alpha(krippendorff_example(), "ordinal") == pytest.approx(0.815, abs=5e-4)  # the paper: 0.815


def test_krippendorff_alpha_two_coders_matches_its_definition_and_edge_cases():
    # Two coders, no missing data, nominal: alpha = 1 - (n-1) D_o... check a tiny case by hand:
    # units (a,a), (a,b), (b,b): o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n = 6, n_a = n_b = 3;
    # D_o = 2/6, D_e = 2 * 3 * 3 / (6 * 5) = 0.6; alpha = 1 - (1/3) / 0.6 = 0.4444444
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(4 / 9, abs=1e-12)
    assert krippendorff_alpha([["a"], ["b"]]) is None  # nothing pairable
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # one value only: D_e = 0
    with pytest.raises(ValueError):
        krippendorff_alpha([["a", "b"]], "interval")


def test_broken_alpha_without_the_m_minus_one_weight_fails():
    """Counting each unit's pairs without dividing by m_u - 1 is a classic slip: caught."""
    units = krippendorff_example()
    pairs = [(c, k) for u in units if len(u) > 1 for i, c in enumerate(u) for j, k in enumerate(u) if i != j]
    n = len(pairs)
    totals = {}
    for c, _ in pairs:
        totals[c] = totals.get(c, 0) + 1
    d_o = sum(c != k for c, k in pairs) / n
    d_e = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n * (n - 1))
    broken = 1 - d_o / d_e
    assert abs(broken - (1 - 312 / 1216)) > 1e-3
    assert krippendorff_alpha(units) != pytest.approx(broken, abs=1e-3)  # the real one is not the slip


def test_agreement_with_majority_leaves_the_annotator_out():
    labels = {
        1: {"ann": "a", "bob": "a", "cy": "b"},  # ann, bob agree with their others' majority? ann: {a, b} tie -> skip
        2: {"ann": "a", "bob": "a", "cy": "a"},
        3: {"ann": "b", "bob": "a"},
        4: {"ann": "a"},  # nobody else: not counted
    }
    # item 1: ann's others {a, b} tied -> skipped; bob's others {a, b} tied -> skipped; cy's others {a, a} -> cy wrong
    # item 2: everyone right; item 3: ann vs {a} wrong, bob vs {b} wrong
    assert agreement_with_majority(labels) == {"ann": 0.5, "bob": 0.5, "cy": 0.5}
    assert agreement_with_majority({1: {"solo": "a"}}) == {"solo": None}


def test_wilson_interval_hand_value():
    # 8 of 10, z = 1.96: centre = (0.8 + 0.19208) / 1.38416 = 0.7167379;
    # half = 1.96 / 1.38416 * sqrt(0.016 + 0.009604) = 1.4160213 * 0.1600125 = 0.2265811
    low, high = wilson_interval(8, 10, z=1.96)
    assert (low, high) == (pytest.approx(0.4901568, abs=1e-6), pytest.approx(0.9433190, abs=1e-6))
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None
    naive_low = 0.8 - 1.96 * math.sqrt(0.8 * 0.2 / 10)  # the Wald interval, 0.5520820: a different answer
    assert low != pytest.approx(naive_low, abs=1e-3)


def test_mean_interval_hand_value():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.2909944, half = 1.96 * 1.2909944 / 2 = 1.2651745
    mean, low, high = mean_interval([1, 2, 3, 4], z=1.96)
    assert (mean, low, high) == pytest.approx((2.5, 1.2348255, 3.7651745), abs=1e-6)
    assert mean_interval([3.0]) is None
