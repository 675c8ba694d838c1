"""FP8 E4M3 weights with an absmax scale per output row (or per group).

Each scale maps the row's (group's) absmax onto E4M3's largest finite value 448;
the code is the E4M3 bit pattern of ``w / scale`` (round to nearest even).
"""

from __future__ import annotations

import torch

from squeezeray.techniques._absmax import AbsmaxTechnique
from squeezeray.techniques._configs import FP8Config
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid


class FP8(AbsmaxTechnique[FP8Config], fmt=QuantFormat.FP8_E4M3, bits=8):
    """FP8 E4M3 weight quantization (no calibration data used)."""

    name = "fp8"
    config_cls = FP8Config
    code_version = 5  # 5: the base class gained rows_independent (tall layers in row blocks); this layer math did not change


def fp8_quantize(weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, QuantGrid]:
    """Cast each weight, divided by its row's (group's) scale, to FP8 E4M3.

    Args:
        weight: (out, in) float weight.
        group_size: Inputs per group, or None for one scale per output row.

    Returns:
        (out, in) uint8 E4M3 bit patterns and the grid (scales (out, n_groups)).
    """
    return FP8.quantize(weight, group_size)
