"""Agreement between annotators, and intervals for human-evaluation figures: small pure functions.

- ``cohen_kappa(a, b)``: κ = (p_o − p_e) / (1 − p_e) for two annotators who labelled the same
  items (Cohen 1960); p_o is the observed agreement, p_e the agreement expected from each
  annotator's own label frequencies. 1 = perfect, 0 = chance, < 0 = worse than chance.
- ``krippendorff_alpha(units, level)``: α = 1 − D_o / D_e over any number of annotators with
  missing labels (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"), from the
  coincidence matrix; ``level`` "nominal" (labels are names: A / B / tie) or "ordinal" (the
  1–7 rating scales, where 6 vs 7 is a smaller disagreement than 1 vs 7).
- ``agreement_with_majority``: per annotator, the share of their labels that equal the
  majority label of the *other* annotators of the same item (leave-one-out, so an annotator
  does not agree with themselves; items whose others are tied or absent are left out).
- ``wilson_interval(successes, n)``: the Wilson score interval for a proportion (Wilson 1927),
  which unlike p ± z·√(p(1−p)/n) stays inside [0, 1] and is usable for small n.
- ``mean_interval(values)``: mean ± z·s/√n (normal approximation, s the sample std).

Every function returns None where the figure is undefined (no items, one value only), rather
than a number that looks meaningful.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's κ of two equally long label lists (item i labelled a[i] by one, b[i] by the other)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs two equally long label lists, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    p_e = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    if p_e == 1.0:  # both gave one and the same label to everything: κ is 0/0
        return None
    return (p_o - p_e) / (1.0 - p_e)


def _coincidences(units: Sequence[Sequence[Hashable]]) -> dict[tuple[Hashable, Hashable], float]:
    """o_ck = Σ_u (number of ordered pairs (c, k) of values in unit u) / (m_u − 1), pairable units only."""
    o: dict[tuple[Hashable, Hashable], float] = {}
    for values in units:
        m = len(values)
        if m < 2:
            continue  # a unit labelled once carries no information about agreement
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    o[(c, k)] = o.get((c, k), 0.0) + 1.0 / (m - 1)
    return o


def _ordinal_delta2(c: float, k: float, marginals: Mapping[float, float]) -> float:
    """Krippendorff's ordinal metric: (Σ_{g between c and k} n_g − (n_c + n_k) / 2)²."""
    low, high = min(c, k), max(c, k)
    between = sum(n for g, n in marginals.items() if low <= g <= high)
    return (between - (marginals[c] + marginals[k]) / 2.0) ** 2


def krippendorff_alpha(units: Sequence[Sequence[Hashable]], level: str = "nominal") -> float | None:
    """α over `units`: for each item, the labels it received (missing ones simply absent)."""
    if level not in ("nominal", "ordinal"):
        raise ValueError(f"level must be 'nominal' or 'ordinal', got {level!r}")
    o = _coincidences(units)
    marginals: dict[Hashable, float] = {}
    for (c, _), count in o.items():
        marginals[c] = marginals.get(c, 0.0) + count
    n = sum(marginals.values())
    if n < 2 or len(marginals) < 2:
        return None  # nothing pairable, or every value the same: D_e = 0

    def delta2(c, k) -> float:
        if level == "nominal":
            return 0.0 if c == k else 1.0
        return _ordinal_delta2(c, k, marginals)

    observed = sum(count * delta2(c, k) for (c, k), count in o.items()) / n
    expected = sum(marginals[c] * marginals[k] * delta2(c, k) for c in marginals for k in marginals) / (n * (n - 1))
    return 1.0 - observed / expected


def agreement_with_majority(labels: Mapping[Hashable, Mapping[Hashable, Hashable]]) -> dict[Hashable, float | None]:
    """`labels[item][annotator] = label` → {annotator: share agreeing with the others' majority}."""
    agree: Counter = Counter()
    counted: Counter = Counter()
    annotators = {who for by_annotator in labels.values() for who in by_annotator}
    for by_annotator in labels.values():
        for who, label in by_annotator.items():
            others = Counter(v for other, v in by_annotator.items() if other != who)
            if not others:
                continue
            (top, top_n), *rest = others.most_common()
            if rest and rest[0][1] == top_n:
                continue  # the others are split evenly: there is no majority to agree with
            counted[who] += 1
            agree[who] += label == top
    return {who: (agree[who] / counted[who] if counted[who] else None) for who in sorted(annotators, key=str)}


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval (low, high) for successes/n; `successes` may be fractional (ties as ½)."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n], got {successes} of {n}")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float, float] | None:
    """(mean, low, high): mean ± z·s/√n with the sample std s; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * s / math.sqrt(n)
    return mean, mean - half, mean + half
