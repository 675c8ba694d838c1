"""FP8 E4M3 weights with an absmax scale per output row (or per group).

Each scale maps the row's (group's) absmax onto E4M3's largest finite value 448;
the code is the E4M3 bit pattern of ``w / scale`` (round to nearest even).
"""

from __future__ import annotations

import torch

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import FP8Config
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized


def fp8_quantize(weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, QuantGrid]:
    """Cast each weight, divided by its row's (group's) scale, to FP8 E4M3.

    Args:
        weight: (out, in) float weight.
        group_size: Inputs per group, or None for one scale per output row.

    Returns:
        (out, in) uint8 E4M3 bit patterns and the grid (scales (out, n_groups)).
    """
    grid = minmax_grid(weight.float(), bits=8, group_size=group_size, symmetric=True, fmt=QuantFormat.FP8_E4M3)
    return grid.quantize(weight.float()), grid


class FP8(BaseTechnique[FP8Config]):
    """FP8 E4M3 weight quantization (no calibration data used)."""

    name = "fp8"
    config_cls = FP8Config

    def apply(self, state: LayerState, config: FP8Config, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        codes, grid = fp8_quantize(state.weight, config.group_size)
        state.set_quantized(grid, codes)
