"""Each unit option's predicted latency on the search's hardware profile, for a latency budget.

The roofline prediction (:class:`~squeezeray.objectives.predicted_latency.PredictedLatency`) is a sum
over layers plus attention and per-block overheads, so it is additive in the units' options exactly as
the allocation solver assumes: a plan's predicted seconds are the fixed part (everything no unit covers)
plus each unit's option. The options' layers come from the layer function (the layer cache, which the
sensitivity stage filled), so nothing is compressed twice.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from torch import nn

from squeezeray.objectives.predicted_latency import PredictedLatency
from squeezeray.search._sensitivity import UnitOption
from squeezeray.spaces import Unit
from squeezeray.techniques import StatsMemo


def unit_latencies(
    model: nn.Module,
    units: Sequence[Unit],
    options: Sequence[Sequence[UnitOption]],
    layer_fn: Callable[..., nn.Module],
    stats: Mapping[str, Any],
    predictor: PredictedLatency,
) -> tuple[tuple[tuple[float, ...], ...], float]:
    """Per unit, each option's predicted seconds (its layers summed), and the seconds of everything else.

    Args:
        model: The original model.
        units, options: The sampling units and, per unit, its options (the allocation problem's order).
        layer_fn: ``(name, linear, layer_plan, stats, *, memo=None) -> module`` (the layer cache; a cache miss
            compresses, with one memo for the loop: a unit's layers read one input and share its factorisation).
        stats: Calibration statistics per layer (a cache miss compresses).
        predictor: The roofline on the target profile.
    """
    total, _ = predictor.predict(model)
    covered = 0.0
    out = []
    memo = StatsMemo()
    for unit, opts in zip(units, options):
        linears = {name: model.get_submodule(name) for name in unit.layers}
        dense = sum(predictor.layer_seconds(name, lin) for name, lin in linears.items())
        covered += dense
        out.append(tuple(dense if o.plan is None else
                         sum(predictor.layer_seconds(name, layer_fn(name, lin, o.plan, stats[name], memo=memo))
                             for name, lin in linears.items()) for o in opts))
    return tuple(out), total - covered
