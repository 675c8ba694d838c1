"""4-bit NormalFloat weights with one absmax scale per block (QLoRA, arXiv:2305.14314)."""

from __future__ import annotations

import torch

from squeezeray.techniques._absmax import AbsmaxTechnique
from squeezeray.techniques._configs import NF4Config
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid


class NF4(AbsmaxTechnique[NF4Config], fmt=QuantFormat.NF4, bits=4):
    """NF4 weight quantization (no calibration data used)."""

    name = "nf4"
    config_cls = NF4Config
    code_version = 5  # 5: the base class gained rows_independent (tall layers in row blocks); this layer math did not change


def nf4_quantize(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, QuantGrid]:
    """Round each weight to the nearest NF4 level of its block's absmax.

    Args:
        weight: (out, in) float weight.
        group_size: Inputs per block (a shorter last block is allowed).

    Returns:
        (out, in) uint8 codes in [0, 16) and the grid (scales (out, ceil(in / group_size))).
    """
    return NF4.quantize(weight, group_size)
