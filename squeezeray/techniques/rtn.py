"""Round-to-nearest weight quantization on the min/max grid (or a GGUF block grid)."""

from __future__ import annotations

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import RTNConfig
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._gguf import gguf_grid
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized


class RTN(BaseTechnique[RTNConfig]):
    name = "rtn"
    rows_independent = True  # every code from its own row's grid (per row or per group of a row)
    code_version = 4  # 4: the base class gained rows_independent (tall layers in row blocks); this layer math did not change
    config_cls = RTNConfig

    def apply(self, state: LayerState, config: RTNConfig, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        if config.gguf is not None:
            grid = gguf_grid(state.weight, config.gguf)
        else:
            grid = minmax_grid(state.weight, bits=config.bits, group_size=config.group_size, symmetric=config.symmetric)
        state.set_quantized(grid, grid.quantize(state.weight))
