"""Compression techniques: one config dataclass and one registered handler each.

Techniques are independent of the search: they see one layer's weight, its
calibration statistics and the step's config, and update a :class:`LayerState`.
"""

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._config import StepKind
from squeezeray.techniques._config import TechniqueConfig
from squeezeray.techniques._configs import AWQConfig
from squeezeray.techniques._configs import FP8Config
from squeezeray.techniques._configs import GPTQConfig
from squeezeray.techniques._configs import IntQuantConfig
from squeezeray.techniques._configs import MagnitudeConfig
from squeezeray.techniques._configs import NF4Config
from squeezeray.techniques._configs import PruneConfig
from squeezeray.techniques._configs import RTNConfig
from squeezeray.techniques._configs import SparseGPTConfig
from squeezeray.techniques._configs import SVDConfig
from squeezeray.techniques._configs import W8A8Config
from squeezeray.techniques._configs import WandaConfig
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import SparsityPattern
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._formats import sqnr_db
from squeezeray.techniques._gguf import BLOCK as GGUF_BLOCK
from squeezeray.techniques._gguf import GGUFType
from squeezeray.techniques._gguf import gguf_grid
from squeezeray.techniques._gguf import pack_blocks
from squeezeray.techniques._registry import TECHNIQUES
from squeezeray.techniques._registry import config_from_dict
from squeezeray.techniques._registry import get_technique
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._state import StatsMemo

__all__ = [
    "AWQConfig",
    "BaseTechnique",
    "FP8Config",
    "GGUFType",
    "GGUF_BLOCK",
    "GPTQConfig",
    "IntQuantConfig",
    "LayerState",
    "LayerStats",
    "MagnitudeConfig",
    "NF4Config",
    "PruneConfig",
    "QuantFormat",
    "QuantGrid",
    "RTNConfig",
    "SVDConfig",
    "SparseGPTConfig",
    "SparsityPattern",
    "StatsMemo",
    "StepKind",
    "TECHNIQUES",
    "TechniqueConfig",
    "W8A8Config",
    "WandaConfig",
    "config_from_dict",
    "get_technique",
    "gguf_grid",
    "minmax_grid",
    "pack_blocks",
    "sqnr_db",
]
