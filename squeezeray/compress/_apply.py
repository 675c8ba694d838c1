"""Applying a :class:`CompressionPlan` to a model, layer by layer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from torch import nn
from tqdm.auto import tqdm

from squeezeray._errors import PlanError
from squeezeray.compress._module import CompressedLinear
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import LayerPlan
from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import get_technique


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """What happened to one layer.

    Attributes:
        name: Module name.
        steps: Label of the steps applied (e.g. ``wanda-2:4+gptq-w4g128``).
        nbytes: Stored size of the compressed layer.
        dense_nbytes: Its size as a float16 dense layer.
        seconds: Wall time spent compressing it.
    """

    name: str
    steps: str
    nbytes: int
    dense_nbytes: int
    seconds: float


def compress_layer(name: str, linear: nn.Linear, plan: LayerPlan, stats: LayerStats) -> CompressedLinear:
    """Run ``plan``'s steps on one linear layer and pack the result.

    Args:
        name: Module name (for messages).
        linear: The original layer (not modified).
        plan: Ordered steps.
        stats: Calibration statistics of the layer's input.
    """
    state = LayerState.from_weight(name, linear.weight, linear.bias)
    for step in plan.steps:
        technique = get_technique(step.technique)
        try:
            technique.apply(state, step, stats)
        except ValueError as err:
            raise PlanError(f"layer {name!r}, step {step.label()!r}: {err}") from None
        state.applied.append(step.label())
    return CompressedLinear.from_state(state)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_plan(
    model: nn.Module,
    plan: CompressionPlan,
    stats: Mapping[str, LayerStats],
    *,
    progress: bool = False,
    layer_fn=None,  # noqa: ANN001 - optional (name, linear, layer_plan, stats) -> CompressedLinear (e.g. a cache)
) -> list[LayerReport]:
    """Compress ``model`` in place according to ``plan``.

    Every layer of the plan is compressed or an error is raised; nothing is
    skipped silently.

    Args:
        model: Model whose linear layers are replaced by :class:`CompressedLinear`.
        plan: The per-layer plan (checked against the model first).
        stats: Calibration statistics for every layer in the plan.
        progress: Show a progress bar over layers.
        layer_fn: Replacement for :func:`compress_layer` (same signature).

    Returns:
        One :class:`LayerReport` per compressed layer, in plan order.
    """
    from squeezeray.models import compressible_layers

    plan.check(compressible_layers(model))
    missing = [n for n in plan.layers if n not in stats]
    if missing:
        raise PlanError(f"no calibration statistics for {len(missing)} layer(s), e.g. {missing[0]!r}")
    fn = layer_fn or compress_layer
    reports = []
    for name, lp in tqdm(list(plan.layers.items()), desc="compressing", unit="layer", disable=not progress):
        linear = model.get_submodule(name)
        t0 = time.perf_counter()
        compressed = fn(name, linear, lp, stats[name])
        replace_module(model, name, compressed)
        dense = linear.weight.numel() * 2 + (0 if linear.bias is None else linear.bias.numel() * 2)
        reports.append(LayerReport(name, lp.label(), compressed.nbytes(), dense, time.perf_counter() - t0))
    return reports
