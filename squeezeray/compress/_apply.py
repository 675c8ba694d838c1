"""Applying a :class:`CompressionPlan` to a model, layer by layer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from squeezeray._device import tensors_on
from squeezeray._errors import PlanError
from squeezeray._memory import trim
from squeezeray._offload import on_execution_device
from squeezeray.compress._embedding import replace_layers
from squeezeray.compress._embedding import replace_module
from squeezeray.compress._module import CompressedLinear
from squeezeray.compress._rows import ROW_BLOCK_BYTES
from squeezeray.compress._row_blocks import join_rows
from squeezeray.compress._rows import row_blocks
from squeezeray.recovery import DistillReport
from squeezeray.recovery import distill
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import LayerPlan
from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import StatsMemo
from squeezeray.techniques import get_technique


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """What happened to one layer.

    Attributes:
        name: Module name.
        steps: Label of the steps applied (e.g. ``wanda-2:4+gptq-w4g128``).
        nbytes: Stored size of the compressed layer.
        dense_nbytes: Its size as a float16 dense layer.
        seconds: Wall time spent compressing it (the shared distillation not included).
        distill: The model-level distillation this layer took part in, if the plan had one.
        notes: What a step did other than asked (e.g. Hessian damping raised), from the stored format.
    """

    name: str
    steps: str
    nbytes: int
    dense_nbytes: int
    seconds: float
    distill: DistillReport | None = None
    notes: tuple[str, ...] = ()


DENSE_BYTES = 2
"""Bytes per element of a tensor stored uncompressed (float16 / bfloat16): what every size counts."""


def dense_nbytes(linear: nn.Module) -> int:
    """Bytes of a layer stored uncompressed: weight and bias at :data:`DENSE_BYTES` per element."""
    bias = getattr(linear, "bias", None)
    return int(linear.weight.numel() * DENSE_BYTES + (0 if bias is None else bias.numel() * DENSE_BYTES))


def compress_layer(
    name: str,
    linear: nn.Linear,
    plan: LayerPlan,
    stats: LayerStats,
    *,
    memo: StatsMemo | None = None,
    row_block_bytes: int = ROW_BLOCK_BYTES,
) -> CompressedLinear:
    """Run ``plan``'s steps on one linear layer and pack the result.

    Args:
        name: Module name (for messages).
        linear: The original layer (not modified).
        plan: Ordered steps.
        stats: Calibration statistics of the layer's input.
        memo: What the steps derive from ``stats`` alone (GPTQ's Hessian factor), shared with the layers
            compressed before and after this one (a loop passes one memo: q/k/v, gate/up share a factorisation);
            None: this layer's own.
        row_block_bytes: When every step computes each output row on its own (:func:`splits_by_rows`), the
            layer is compressed this many float32 bytes of weight at a time (the same stored result).
    """
    weight, bias = linear.weight, linear.bias
    whole = [(0, int(weight.shape[0]))]
    blocks = row_blocks(*weight.shape, row_block_bytes) if splits_by_rows(plan) else whole
    memo = StatsMemo() if memo is None else memo  # shared by the row blocks (and a loop's layers: see above)
    stats = memo.placed(stats, weight.device)  # kept on the host; the steps run where the layer's weight is
    parts = []
    for r0, r1 in blocks:  # a tall layer a block of rows at a time (same stored tensors; see _row_blocks)
        state = LayerState.from_weight(name, weight[r0:r1], None if bias is None else bias[r0:r1], memo=memo)
        _run_steps(state, plan.steps, stats)
        parts.append(CompressedLinear.from_state(state))
        del state
        trim()  # the steps' float32 temporaries go back to the system, not into a heap that only grows
    return parts[0] if len(parts) == 1 else join_rows(parts)


def splits_by_rows(plan: LayerPlan) -> bool:
    """Whether every step of ``plan`` computes each output row on its own (so a tall layer compresses in row blocks)."""
    return bool(plan.steps) and all(get_technique(step.technique).rows_independent for step in plan.steps)


def stats_on(stats: LayerStats, device: torch.device | str) -> LayerStats:
    """``stats`` with every tensor on ``device`` (``stats`` itself when they are there already): statistics are
    kept on the host and a technique computes where its layer's weight is."""
    return tensors_on(stats, device)


def _run_steps(state: LayerState, steps: tuple, stats: LayerStats) -> None:  # noqa: ANN001 - TechniqueConfig
    stats = stats_on(stats, state.weight.device)  # kept on the host; the steps run where the layer's weight is
    for step in steps:
        technique = get_technique(step.technique)
        try:
            technique.apply(state, step, stats)
        except PlanError as err:  # impossible by nature (InfeasibleStepError); a numerical failure or bug
            # (any other error) propagates with its traceback and a search records the trial as failed
            raise PlanError(f"layer {state.name!r}, step {step.label()!r}: {err}") from None
        state.applied.append(step.label())


def apply_plan(
    model: nn.Module,
    plan: CompressionPlan,
    stats: Mapping[str, LayerStats],
    *,
    progress: bool = False,
    layer_fn=None,  # noqa: ANN001 - optional (name, linear, layer_plan, stats, *, memo) -> CompressedLinear (a cache)
    teacher: nn.Module | None = None,
    distill_tokens: torch.Tensor | None = None,
) -> list[LayerReport]:
    """Compress ``model`` in place according to ``plan``.

    Every layer of the plan is compressed or an error is raised; nothing is
    skipped silently.

    Args:
        model: Model whose linear layers are replaced by :class:`CompressedLinear`.
        plan: The per-layer plan (checked against the model first).
        stats: Calibration statistics for every layer in the plan.
        progress: Show a progress bar over layers.
        layer_fn: Replacement for :func:`compress_layer` (same signature, ``memo`` keyword included). Not used for a
            plan with distillation: its layers depend on the whole model's training.
        teacher: The original model, for a plan with distillation.
        distill_tokens: (n_seqs, seq_len) calibration ids, for a plan with distillation.

    Returns:
        One :class:`LayerReport` per compressed layer, in plan order.
    """
    from squeezeray.models import compressible_layers
    from squeezeray.models import tied_table

    plan.check(compressible_layers(model))
    missing = [n for n in plan.layers if n not in stats]
    if missing:
        raise PlanError(f"no calibration statistics for {len(missing)} layer(s), e.g. {missing[0]!r}")
    if plan.distill is not None:
        if teacher is None or distill_tokens is None:
            raise PlanError("the plan has a distillation (kd) step: apply_plan needs teacher= and distill_tokens=")
        table = tied_table(model)
        if table is not None and table.head in plan.layers:
            raise PlanError(f"layer {table.head!r}: distillation (kd) trains the head apart from the input embedding "
                            "it is tied to; leave the tied table out of a plan with kd")
        return _apply_with_distill(model, plan, stats, teacher, distill_tokens, progress=progress)
    fn = layer_fn or compress_layer
    memo = StatsMemo()  # layers reading one input share what is derived from its statistics
    reports = []
    for name, lp in tqdm(list(plan.layers.items()), desc="compressing", unit="layer", disable=not progress):
        linear = model.get_submodule(name)
        t0 = time.perf_counter()
        compressed = on_execution_device(
            model, linear, lambda lin: fn(name, lin, lp, stats[name], memo=memo))  # noqa: B023
        replace_layers(model, {name: compressed})
        reports.append(LayerReport(name, lp.label(), compressed.nbytes(), dense_nbytes(linear), time.perf_counter() - t0,
                                   notes=compressed.fmt.notes))
    return reports


def _apply_with_distill(
    model: nn.Module,
    plan: CompressionPlan,
    stats: Mapping[str, LayerStats],
    teacher: nn.Module,
    tokens: torch.Tensor,
    *,
    progress: bool,
) -> list[LayerReport]:
    """Prune every layer, distill the surviving weights towards ``teacher``, then quantize.

    Quantizers after the distillation use the calibration statistics of the original model
    (the same inputs GPTQ/AWQ see without distillation), applied to the trained weights.
    """
    assert plan.distill is not None
    states: dict[str, LayerState] = {}
    seconds: dict[str, float] = {}
    masks: dict[str, torch.Tensor | None] = {}
    originals: dict[str, nn.Linear] = {}
    for name, lp in tqdm(list(plan.layers.items()), desc="pruning", unit="layer", disable=not progress):
        linear = model.get_submodule(name)
        t0 = time.perf_counter()
        before, _ = lp.split_for_distill()
        state = LayerState.from_weight(name, linear.weight, linear.bias)
        _run_steps(state, before, stats[name])
        trainable = nn.Linear(state.shape[1], state.shape[0], bias=linear.bias is not None,
                              device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            trainable.weight.copy_(state.weight)
            if linear.bias is not None:
                trainable.bias.copy_(linear.bias)
        originals[name], states[name], masks[name] = linear, state, state.mask
        replace_module(model, name, trainable)
        seconds[name] = time.perf_counter() - t0
    report = distill(model, teacher, tokens, plan.distill, masks, progress=progress)
    reports = []
    for name, lp in tqdm(list(plan.layers.items()), desc="quantizing", unit="layer", disable=not progress):
        t0 = time.perf_counter()
        pruned = states[name]
        trained = model.get_submodule(name).weight.detach().float()
        state = LayerState(
            name=name, original=pruned.original, weight=trained.clone(), bias=pruned.bias,
            sparsity=pruned.sparsity, applied=[*pruned.applied, plan.distill.label()], notes=list(pruned.notes),
        )
        state.refresh_weight()  # re-apply the mask exactly
        _, after = lp.split_for_distill()
        _run_steps(state, after, stats[name])
        compressed = CompressedLinear.from_state(state)
        replace_module(model, name, compressed)
        linear = originals[name]
        reports.append(LayerReport(
            name, plan.layer_label(name), compressed.nbytes(), dense_nbytes(linear), seconds[name] + time.perf_counter() - t0,
            report, compressed.fmt.notes,
        ))
    return reports
