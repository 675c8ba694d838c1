"""Pure statistics for accuracy, loyalty and robustness (numpy in, floats out)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from squeezeray._errors import SqueezerayError


def select_docs(n_docs: int, limit: int | None, seed: int) -> tuple[int, ...]:
    """A seeded subset of ``limit`` document indices, in ascending order.

    The subset for ``limit=k`` is contained in the one for ``limit=k+1`` (same seed),
    so a search-time subset is part of any larger final-report subset.

    Args:
        n_docs: Documents in the task.
        limit: How many to keep; ``None`` or ``>= n_docs`` keeps all.
        seed: Order of the draw.
    """
    if n_docs < 1:
        raise SqueezerayError("the task has no documents")
    if limit is not None and limit < 1:
        raise SqueezerayError(f"limit={limit}: must be a positive integer or None (all items)")
    if limit is None or limit >= n_docs:
        return tuple(range(n_docs))
    order = np.random.default_rng(seed).permutation(n_docs)
    return tuple(sorted(int(i) for i in order[:limit]))


def mean_stderr(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and its standard error, sample std (ddof=1) / sqrt(n), as lm-eval's ``mean_stderr``.

    Returns ``nan`` as the error of a single value.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise SqueezerayError("no values to average")
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` over the same items and its standard error (paired comparison)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise SqueezerayError(f"paired values differ in shape: {x.shape} vs {y.shape}")
    return mean_stderr(x - y)


def perplexity_from_logliks(logliks: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """exp(-mean log-likelihood) and its delta-method standard error, ppl * se(mean)."""
    mean, se = mean_stderr(logliks)
    ppl = math.exp(-mean)
    return ppl, ppl * se


def choice_probs(scores: np.ndarray) -> np.ndarray:
    """Softmax over one item's choice scores, (n_choices,) -> (n_choices,)."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence of two distributions over the same choices, in bits (0..1)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise SqueezerayError(f"distributions over different numbers of choices: {p.shape} vs {q.shape}")
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0)


def robustness_score(clean: float, perturbed: Sequence[float]) -> float:
    """RS = mean over perturbations of (1 - |P - P_pert| / P), as a fraction.

    1 when no perturbation moves P; can fall below 0 when a perturbation more than
    doubles or wipes out P.

    Args:
        clean: P on the clean inputs (must be > 0).
        perturbed: P on each perturbed version of the inputs.
    """
    if not perturbed:
        raise SqueezerayError("robustness needs at least one perturbation")
    if clean <= 0:
        raise SqueezerayError(f"robustness is undefined when P on clean inputs is {clean}")
    return float(np.mean([1.0 - abs(clean - p) / clean for p in perturbed]))


@dataclasses.dataclass(frozen=True)
class ChoiceComparison:
    """How a candidate's choices compare with a reference model's on the same items.

    Attributes:
        n: Items.
        label_loyalty: Share of items where both pick the same choice (top-1).
        label_loyalty_stderr: Its standard error.
        probability_loyalty: 1 - mean Jensen-Shannon divergence (bits) of the two
            distributions over choices.
        js_mean: Mean Jensen-Shannon divergence, bits.
        js_max: Largest per-item divergence, bits.
        acc_reference: Share of items the reference answers correctly.
        acc_candidate: Share of items the candidate answers correctly.
    """

    n: int
    label_loyalty: float
    label_loyalty_stderr: float
    probability_loyalty: float
    js_mean: float
    js_max: float
    acc_reference: float
    acc_candidate: float


def compare_choices(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], gold: Sequence[int]
) -> ChoiceComparison:
    """Label and probability loyalty of ``candidate`` to ``reference``.

    Args:
        reference: Per-item choice scores of the reference model, (n_choices,) each.
        candidate: The candidate's, same items and order.
        gold: Correct choice per item.
    """
    if not (len(reference) == len(candidate) == len(gold)) or not gold:
        raise SqueezerayError(
            f"compare_choices needs equal, non-zero item counts: {len(reference)}, {len(candidate)}, {len(gold)}"
        )
    same, js, ref_ok, cand_ok = [], [], [], []
    for r, c, g in zip(reference, candidate, gold, strict=True):
        p, q = choice_probs(r), choice_probs(c)
        same.append(float(np.argmax(p) == np.argmax(q)))
        js.append(js_divergence(p, q))
        ref_ok.append(float(np.argmax(p) == g))
        cand_ok.append(float(np.argmax(q) == g))
    label, label_se = mean_stderr(same)
    return ChoiceComparison(
        len(gold), label, label_se, 1.0 - float(np.mean(js)), float(np.mean(js)), float(np.max(js)),
        float(np.mean(ref_ok)), float(np.mean(cand_ok)),
    )


def gold_probability(scores: Sequence[np.ndarray], gold: Sequence[int]) -> float:
    """P: mean over items of the probability (softmax over choices) of the correct choice."""
    if len(scores) != len(gold) or not gold:
        raise SqueezerayError(f"gold_probability needs equal, non-zero item counts: {len(scores)}, {len(gold)}")
    return float(np.mean([choice_probs(s)[g] for s, g in zip(scores, gold, strict=True)]))
