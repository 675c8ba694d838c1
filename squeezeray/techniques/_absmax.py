"""Weight-only formats on a symmetric absmax grid, one scale per output row or group (NF4, FP8 E4M3).

The technique is the same for every such format: each scale maps the row's (group's)
absmax onto the format's largest value and each weight becomes the code of its
nearest level (see :func:`~squeezeray.techniques._formats.minmax_grid`). No
calibration data is used.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar
from typing import TypeVar

import torch

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import FP8Config
from squeezeray.techniques._configs import NF4Config
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized

A = TypeVar("A", FP8Config, NF4Config)


class AbsmaxTechnique(BaseTechnique[A]):
    """Codes of ``fmt`` (``bits`` bits each) with one absmax scale per row or group of ``config.group_size``.

    A subclass names its format in the class line: ``class NF4(AbsmaxTechnique[NF4Config], fmt=QuantFormat.NF4, bits=4)``.
    """

    fmt: ClassVar[QuantFormat]
    bits: ClassVar[int]
    rows_independent = True  # one scale per row or group of a row

    def __init_subclass__(cls, *, fmt: QuantFormat, bits: int, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.fmt, cls.bits = fmt, bits

    @classmethod
    def quantize(cls, weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, QuantGrid]:
        """(out, in) uint8 codes of a (out, in) float weight and their grid (scales (out, n_groups))."""
        grid = minmax_grid(weight.float(), bits=cls.bits, group_size=group_size, symmetric=True, fmt=cls.fmt)
        return grid.quantize(weight.float()), grid

    def apply(self, state: LayerState, config: A, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        codes, grid = self.quantize(state.weight, config.group_size)
        state.set_quantized(grid, codes)
