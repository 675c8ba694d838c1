"""Objectives derived from others: LAT, parameter efficiency and the weighted Pareto score.

Accuracy here is the task accuracy when an ``accuracy`` objective is asked for, otherwise the
per-token accuracy proxy 1/perplexity on the held-out text (see
:func:`~squeezeray.objectives.tradeoff.accuracy_from_perplexity`). Components are measured once per
candidate (``EvalContext.memo``) and once for the original (``EvalContext.reference``).
"""

from __future__ import annotations

from torch import nn

from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance
from squeezeray.objectives.latency import Latency
from squeezeray.objectives.perplexity import Perplexity
from squeezeray.objectives.size import Size
from squeezeray.objectives.tradeoff import accuracy_from_perplexity
from squeezeray.objectives.tradeoff import lat_score
from squeezeray.objectives.tradeoff import parameter_efficiency
from squeezeray.objectives.tradeoff import weighted_pareto_score


def effective_params(model: nn.Module) -> int:
    """Parameters the model stores: kept weights of compressed layers, low-rank factors, everything else."""
    from squeezeray.compress import CompressedLinear

    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, CompressedLinear):
            f = module.fmt
            total += f.n_kept + f.rank * (f.in_features + f.out_features) + (f.out_features if f.has_bias else 0)
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _accuracy(ctx: EvalContext) -> tuple[float, Measurement]:
    m = ctx.measure(Perplexity())
    return accuracy_from_perplexity(m.value), m


class LAT(BaseObjective):
    """Latency-accuracy trade-off: α(1 − acc_c/acc) + (1 − α)(lat_c/lat); lower is better."""

    name = "lat"
    direction = Direction.MINIMIZE
    unit = "score"

    def __init__(self, *, alpha: float = 0.5) -> None:
        self.alpha = alpha

    def measure(self, ctx: EvalContext) -> Measurement:
        acc_c, _ = _accuracy(ctx)
        acc, _ = _accuracy(ctx.for_original())
        lat_c = ctx.measure(Latency())
        lat = ctx.for_original().measure(Latency())
        value = lat_score(acc_c, acc, lat_c.value, lat.value, self.alpha)
        return Measurement(self.name, value, self.unit, Provenance.MEASURED,
                           f"alpha={self.alpha}; accuracy = 1/perplexity; latency {lat_c.provenance.value}: {lat_c.where}",
                           {"acc_ratio": acc_c / acc, "latency_ratio": lat_c.value / lat.value})


class ParameterEfficiency(BaseObjective):
    """PE = (acc_c/acc) / (params_c/params); higher is better."""

    name = "parameter_efficiency"
    direction = Direction.MAXIMIZE
    unit = "ratio"

    def measure(self, ctx: EvalContext) -> Measurement:
        acc_c, _ = _accuracy(ctx)
        acc, _ = _accuracy(ctx.for_original())
        pc, p = effective_params(ctx.candidate), effective_params(ctx.original)
        return Measurement(self.name, parameter_efficiency(acc_c, acc, pc, p), self.unit, Provenance.COMPUTED,
                           "accuracy = 1/perplexity; params = stored (kept) weights", {"params": pc, "params_original": p})


class ParetoScore(BaseObjective):
    """Weighted score of normalised size, latency ratio and accuracy loss; lower is better."""

    name = "pareto_score"
    direction = Direction.MINIMIZE
    unit = "score"

    def __init__(self, *, size: float = 1.0, latency: float = 1.0, accuracy: float = 1.0) -> None:
        self.weights = {"size": size, "latency": latency, "accuracy": accuracy}

    def measure(self, ctx: EvalContext) -> Measurement:
        orig = ctx.for_original()
        size_ratio = ctx.measure(Size()).value / orig.measure(Size()).value
        lat_ratio = ctx.measure(Latency()).value / orig.measure(Latency()).value
        acc_c, _ = _accuracy(ctx)
        acc, _ = _accuracy(orig)
        loss = max(0.0, 1.0 - acc_c / acc)
        value = weighted_pareto_score(size_ratio, lat_ratio, loss, self.weights)
        return Measurement(self.name, value, self.unit, Provenance.MEASURED, f"weights {self.weights}",
                           {"size_ratio": size_ratio, "latency_ratio": lat_ratio, "accuracy_loss": loss})
