"""W8A8 with SmoothQuant migration (Xiao et al. 2022, arXiv:2211.10438).

Activation outliers sit in a few input channels; SmoothQuant divides channel ``j``
of ``x`` by ``smooth_j = max|x_j|**alpha / max_i|W_ij|**(1-alpha)`` and multiplies
column ``j`` of ``W`` by it, which leaves ``x @ W.T`` unchanged but balances the
two quantization problems. The layer then computes
``fake_quant_per_token(x / smooth, 8) @ W_stored.T`` with ``W_stored`` the INT8
(symmetric, one scale per output row) quantization of ``W * smooth``; this module
records ``state.act = ActQuantState(smooth, bits=8)`` and the codes.
``smooth`` is float16-rounded because that is how it is stored.
"""

from __future__ import annotations

import torch

from squeezeray.techniques._actquant import require_no_act_scale
from squeezeray.techniques._actquant import to_float16_scale
from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import W8A8Config
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._state import ActQuantState
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized

ACT_BITS = 8
_MIN_SMOOTH = 1e-5


def smoothquant_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel migration scale.

    ``smooth_j = max|x_j|**alpha / max_i|W_ij|**(1-alpha)``, clamped to at least
    1e-5; channels with no activation or no weight get 1. The result is rounded to
    float16 (its storage precision).

    Args:
        act_absmax: (in,) max |x_j| over the calibration tokens.
        weight: (out, in) float weight.
        alpha: Migration strength in [0, 1].

    Returns:
        (in,) float32 positive scale.
    """
    a = act_absmax.to(weight.device, torch.float32)  # (in,)
    wmax = weight.float().abs().amax(dim=0)  # (in,)
    live = (a > 0) & (wmax > 0)  # (in,)
    s = a.clamp(min=_MIN_SMOOTH).pow(alpha) / wmax.clamp(min=_MIN_SMOOTH).pow(1.0 - alpha)  # (in,)
    s = torch.where(live, s.clamp(min=_MIN_SMOOTH), torch.ones_like(s))  # (in,)
    return to_float16_scale(s)


def w8a8_quantize(
    weight: torch.Tensor, act_absmax: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, QuantGrid]:
    """Smooth ``weight`` and quantize it to INT8, symmetric, one scale per output row.

    Args:
        weight: (out, in) float weight.
        act_absmax: (in,) max |x_j| of the calibration inputs.
        alpha: Migration strength in [0, 1].

    Returns:
        smooth (in,) float32, codes (out, in) uint8 of ``weight * smooth``, and their grid.
    """
    smooth = smoothquant_scales(act_absmax, weight, alpha)  # (in,)
    ws = weight.float() * smooth  # (out, in)
    grid = minmax_grid(ws, bits=8, group_size=None, symmetric=True)
    return smooth, grid.quantize(ws), grid


class W8A8(BaseTechnique[W8A8Config]):
    """INT8 weights and dynamic per-token INT8 activations with SmoothQuant."""

    name = "w8a8"
    config_cls = W8A8Config
    code_version = 5  # 5: the base class gained rows_independent (tall layers in row blocks); this layer math did not change

    def apply(self, state: LayerState, config: W8A8Config, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        require_no_act_scale(state, self.name)
        smooth, codes, grid = w8a8_quantize(state.weight, stats.abs_max, float(config.alpha))
        # Must precede set_quantized: refresh_weight divides the codes by smooth.
        state.act = ActQuantState(smooth=smooth, bits=ACT_BITS)
        state.set_quantized(grid, codes)
