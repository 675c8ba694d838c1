"""4-bit NormalFloat weights with one absmax scale per block (QLoRA, arXiv:2305.14314)."""

from __future__ import annotations

import torch

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import NF4Config
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized


def nf4_quantize(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, QuantGrid]:
    """Round each weight to the nearest NF4 level of its block's absmax.

    Args:
        weight: (out, in) float weight.
        group_size: Inputs per block (a shorter last block is allowed).

    Returns:
        (out, in) uint8 codes in [0, 16) and the grid (scales (out, ceil(in / group_size))).
    """
    grid = minmax_grid(weight.float(), bits=4, group_size=group_size, symmetric=True, fmt=QuantFormat.NF4)
    return grid.quantize(weight.float()), grid


class NF4(BaseTechnique[NF4Config]):
    """NF4 weight quantization (no calibration data used)."""

    name = "nf4"
    config_cls = NF4Config

    def apply(self, state: LayerState, config: NF4Config, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        codes, grid = nf4_quantize(state.weight, config.group_size)
        state.set_quantized(grid, codes)
