"""AWQ (Lin et al. 2023, arXiv:2306.00978): activation-aware per-input-channel scaling.

Input channels with large mean activation magnitude ``s_x = E|x_j|`` are salient.
AWQ multiplies column ``j`` of ``W`` by ``s_j = s_x_j**alpha`` (normalised by
``sqrt(max s * min s)``) before round-to-nearest quantization and divides it back
out afterwards, so the effective weight is ``Q(W * s) / s``: salient columns get a
finer effective grid. ``alpha`` is searched over ``grid_points`` values
``k / grid_points`` in [0, 1) (``alpha = 0`` is plain RTN) by the exact mean
squared output error ``tr(dW H dW^T)`` with ``H = X^T X / n``. Optionally a
clipping ratio of each (row, group) range is then searched (1.0 down to 0.5).

Storage: in a real deployment ``1 / s`` is folded into the previous operation
(a norm or another linear layer). A layer here has to stay self-contained, so
the scale is recorded on the layer as ``state.act = ActQuantState(smooth=s,
bits=SCALE_ONLY_BITS)`` with ``SCALE_ONLY_BITS == 16``: "no activation
quantization, only divide ``x`` by ``smooth``". The stored weight is
``codes = grid.quantize(W * s)`` and the layer computes
``(x / s) @ grid.dequantize(codes).T``, which is what
:meth:`LayerState.refresh_weight` reflects (dequantized codes divided by
``smooth``, times the mask if pruned). ``s`` is rounded to float16 before the
search because that is how it is stored. When the search picks ``alpha = 0``
(``s == 1``) no ``act`` state is recorded.
"""

from __future__ import annotations

import dataclasses

import torch

from squeezeray.techniques._actquant import SCALE_ONLY_BITS
from squeezeray.techniques._actquant import require_no_act_scale
from squeezeray.techniques._actquant import to_float16_scale
from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._clip import clip_search
from squeezeray.techniques._clip import effective_weight
from squeezeray.techniques._clip import output_error
from squeezeray.techniques._configs import AWQConfig
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._state import ActQuantState
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized

_SALIENCE_FLOOR = 1e-4  # relative to the largest channel; keeps dead channels finite


@dataclasses.dataclass(frozen=True)
class AWQResult:
    """What the AWQ search produced.

    Attributes:
        codes: (out, in) uint8 codes of ``W * smooth`` on ``grid``.
        grid: Integer grid of the scaled weight, per (row, group).
        smooth: (in,) float32 per-input-channel scale (float16-representable).
        alpha: The chosen scaling exponent.
        error: ``tr(dW H dW^T)`` of the effective weight (mask applied) against ``weight``.
    """

    codes: torch.Tensor
    grid: QuantGrid
    smooth: torch.Tensor
    alpha: float
    error: float


def awq_scales(salience: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ's per-input-channel scale ``s = x**alpha / sqrt(max * min)``, float16-rounded.

    Args:
        salience: (in,) mean |x_j|; zeros are floored at 1e-4 of the largest value.
        alpha: Exponent in [0, 1).

    Returns:
        (in,) float32 positive scale; all ones for ``alpha == 0``.
    """
    x = salience.float()  # (in,)
    top = float(x.max()) if x.numel() else 0.0
    floor = top * _SALIENCE_FLOOR if top > 0 else 1.0
    s = x.clamp(min=floor).pow(alpha)  # (in,)
    s = s / torch.sqrt(s.max() * s.min())
    return to_float16_scale(s)


def awq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    salience: torch.Tensor,
    *,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    grid_points: int = 20,
    clip: bool = True,
    mask: torch.Tensor | None = None,
) -> AWQResult:
    """Search AWQ's scaling exponent (and optionally clipping) and quantize.

    Args:
        weight: (out, in) float weight.
        hessian: (in, in) ``X^T X / n`` of the calibration inputs.
        salience: (in,) mean |x_j| of the calibration inputs.
        bits, group_size, symmetric: The integer grid.
        grid_points: Exponents ``k / grid_points``, k = 0..grid_points-1, are tried.
        clip: Also search a clipping ratio per (row, group).
        mask: (out, in) bool kept weights, or None.

    Returns:
        Codes of ``weight * smooth``, their grid, ``smooth``, alpha and the error.
    """
    w = weight.detach().float()  # (out, in)
    h = hessian.detach().to(w.device, torch.float32)  # (in, in)
    keep = None if mask is None else mask.to(torch.bool)  # (out, in)
    best: tuple[float, float, torch.Tensor, QuantGrid] | None = None
    for k in range(grid_points):
        alpha = k / grid_points
        s = awq_scales(salience.to(w.device), alpha)  # (in,)
        ws = w * s  # (out, in)
        grid = minmax_grid(ws, bits=bits, group_size=group_size, symmetric=symmetric)
        err = float(output_error(effective_weight(grid, ws, s, keep) - w, h).sum())
        if best is None or err < best[0]:
            best = (err, alpha, s, grid)
    if best is None:
        raise ValueError(f"grid_points={grid_points}: must be a positive integer")
    err, alpha, s, grid = best
    if clip:
        grid = clip_search(w, s, h, bits=bits, group_size=group_size, symmetric=symmetric, mask=keep)
        err = float(output_error(effective_weight(grid, w * s, s, keep) - w, h).sum())
    codes = grid.quantize(w * s)  # (out, in) uint8
    return AWQResult(codes=codes, grid=grid, smooth=s, alpha=alpha, error=err)


class AWQ(BaseTechnique[AWQConfig]):
    """AWQ integer weight quantization; records its scale as a scale-only ``act`` state."""

    name = "awq"
    config_cls = AWQConfig
    needs_hessian = True
    code_version = 5  # 5: the base class gained rows_independent (tall layers in row blocks); this layer math did not change

    def apply(self, state: LayerState, config: AWQConfig, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        hessian = stats.require_hessian(self.name)
        require_no_act_scale(state, self.name)
        res = awq_quantize(
            state.weight,
            hessian,
            stats.abs_mean,
            bits=config.bits,
            group_size=config.group_size,
            symmetric=config.symmetric,
            grid_points=config.grid_points,
            clip=config.clip_search,
            mask=state.mask,
        )
        if not bool(torch.all(res.smooth == 1)):
            # Must precede set_quantized: refresh_weight divides the codes by smooth.
            state.act = ActQuantState(smooth=res.smooth, bits=SCALE_ONLY_BITS)
        state.set_quantized(res.grid, res.codes)
