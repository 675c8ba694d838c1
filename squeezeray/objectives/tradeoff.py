"""Trade-off scores that combine accuracy with cost (pure functions on numbers).

All inputs compare a candidate (``_c``) with the original model it came from:

* :func:`lat_score`: α(1 − acc_c/acc) + (1 − α)(lat_c/lat), lower is better;
* :func:`parameter_efficiency`: (acc_c/acc) / (params_c/params), higher is better;
* :func:`weighted_pareto_score`: weighted mean of size ratio, latency ratio and
  relative accuracy loss, lower is better;
* :func:`accuracy_from_perplexity`: 1/ppl, the proxy accuracy when no task accuracy exists;
* :func:`relative_cost`: an objective's change against the baseline, direction-aware
  (the normalisation :func:`squeezeray.search.select` uses).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from squeezeray._errors import SqueezerayError
from squeezeray._schema import did_you_mean
from squeezeray.objectives._base import Direction

PARETO_TERMS = ("size", "latency", "accuracy")


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SqueezerayError(f"{name}={value!r}: must be a finite number")
    return float(value)


def _positive(name: str, value: object) -> float:
    v = _finite(name, value)
    if v <= 0:
        raise SqueezerayError(f"{name}={value!r}: must be > 0")
    return v


def _non_negative(name: str, value: object) -> float:
    v = _finite(name, value)
    if v < 0:
        raise SqueezerayError(f"{name}={value!r}: must be >= 0")
    return v


def lat_score(acc_c: float, acc: float, lat_c: float, lat: float, alpha: float) -> float:
    """Latency-aware score: α(1 − acc_c/acc) + (1 − α)(lat_c/lat); lower is better.

    The first term is the relative accuracy loss, the second the latency ratio; the
    original scores 1 − α.

    Args:
        acc_c: Candidate accuracy (any higher-is-better quality, e.g. task accuracy or
            :func:`accuracy_from_perplexity`), >= 0.
        acc: Original accuracy, > 0.
        lat_c: Candidate latency, >= 0.
        lat: Original latency (same unit), > 0.
        alpha: Weight of accuracy, in [0, 1].

    Returns:
        The score.
    """
    acc_c, acc = _non_negative("acc_c", acc_c), _positive("acc", acc)
    lat_c, lat = _non_negative("lat_c", lat_c), _positive("lat", lat)
    alpha = _finite("alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise SqueezerayError(f"alpha={alpha!r}: must be in [0, 1]")
    return alpha * (1.0 - acc_c / acc) + (1.0 - alpha) * (lat_c / lat)


def parameter_efficiency(acc_c: float, acc: float, params_c: float, params: float) -> float:
    """Accuracy kept per parameter kept: (acc_c/acc) / (params_c/params); higher is better.

    1.0 for the original; a candidate keeping 95% of the accuracy with half the
    parameters scores 1.9. ``params`` may be any size measure (non-zero weights,
    bytes) as long as both use the same one.

    Args:
        acc_c: Candidate accuracy, >= 0.
        acc: Original accuracy, > 0.
        params_c: Candidate parameters (or bytes), > 0.
        params: Original parameters (or bytes), > 0.
    """
    acc_c, acc = _non_negative("acc_c", acc_c), _positive("acc", acc)
    params_c, params = _positive("params_c", params_c), _positive("params", params)
    return (acc_c / acc) / (params_c / params)


def weighted_pareto_score(
    size_ratio: float, latency_ratio: float, accuracy_loss: float, weights: Mapping[str, float]
) -> float:
    """One number for a size / latency / accuracy trade-off; lower is better.

    Normalisation: every term is relative to the original, so all are dimensionless
    and 1 (ratios) or 0 (loss) means "unchanged":

    * ``size_ratio`` = size_c / size (0.25 for 4-bit weights of a 16-bit model);
    * ``latency_ratio`` = latency_c / latency;
    * ``accuracy_loss`` = 1 − acc_c/acc (relative; negative when the candidate is better).

    The score is the weighted mean ``Σ w_k · term_k / Σ w_k``, so weights need not sum
    to 1 and only their proportions matter. The original scores
    ``(w_size + w_latency) / Σ w``.

    Args:
        size_ratio: >= 0.
        latency_ratio: >= 0.
        accuracy_loss: Finite, <= 1.
        weights: Keys among ``size``, ``latency``, ``accuracy`` (absent = 0), values >= 0,
            not all 0.

    Returns:
        The weighted mean.
    """
    terms = {
        "size": _non_negative("size_ratio", size_ratio),
        "latency": _non_negative("latency_ratio", latency_ratio),
        "accuracy": _finite("accuracy_loss", accuracy_loss),
    }
    if terms["accuracy"] > 1.0:
        raise SqueezerayError(f"accuracy_loss={accuracy_loss!r}: a relative loss is at most 1")
    if not isinstance(weights, Mapping):
        raise SqueezerayError(f"weights={weights!r}: must be a mapping of {', '.join(PARETO_TERMS)} to numbers")
    for key in weights:
        if key not in PARETO_TERMS:
            hint = did_you_mean(str(key), PARETO_TERMS, n=1, cutoff=0.6)
            raise SqueezerayError(f"weights: unknown term {key!r}.{hint} Known: {', '.join(PARETO_TERMS)}")
    w = {k: _non_negative(f"weights[{k!r}]", weights.get(k, 0.0)) for k in PARETO_TERMS}
    total = sum(w.values())
    if total <= 0:
        raise SqueezerayError(f"weights={dict(weights)!r}: at least one weight must be > 0")
    return sum(w[k] * terms[k] for k in PARETO_TERMS) / total


def accuracy_from_perplexity(ppl: float) -> float:
    """Proxy accuracy 1/ppl: the per-token geometric-mean probability of the text.

    Perplexity is exp(mean NLL), so 1/ppl = exp(−mean NLL) = (Π p_t)^(1/T), the
    geometric mean of the probabilities the model gives the actual next tokens. It is
    in (0, 1], higher is better, and stands in for accuracy in :func:`lat_score` and
    :func:`parameter_efficiency` when no task accuracy was measured.

    Args:
        ppl: Perplexity, >= 1.
    """
    ppl = _finite("ppl", ppl)
    if ppl < 1.0:
        raise SqueezerayError(f"ppl={ppl!r}: a perplexity is at least 1")
    return 1.0 / ppl


def relative_cost(value: float, baseline: float, direction: Direction) -> float:
    """How much worse than the baseline a value is, as a fraction; negative is better.

    MINIMIZE: (value − baseline)/|baseline|; MAXIMIZE: (baseline − value)/|baseline|.
    A zero baseline (KL of the original is 0) has no relative scale, so the absolute
    difference is used instead (value − baseline, or baseline − value).

    Args:
        value: The candidate's value.
        baseline: The original's value.
        direction: The objective's direction.
    """
    value, baseline = _finite("value", value), _finite("baseline", baseline)
    direction = Direction(direction)
    diff = value - baseline if direction is Direction.MINIMIZE else baseline - value
    return diff / abs(baseline) if baseline != 0 else diff
