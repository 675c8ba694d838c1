"""Per-layer compression plans and the spaces they are searched in."""

from squeezeray.spaces._plan import CompressionPlan
from squeezeray.spaces._plan import LayerPlan
from squeezeray.spaces._plan import parse_preset
from squeezeray.spaces._plan import parse_step
from squeezeray.spaces._plan import parse_steps
from squeezeray.spaces._presets import PRESET_SPACES
from squeezeray.spaces._presets import load_space
from squeezeray.spaces._presets import preset_space
from squeezeray.spaces._space import GroupSpec
from squeezeray.spaces._space import NONE
from squeezeray.spaces._space import Order
from squeezeray.spaces._space import SearchSpace
from squeezeray.spaces._space import Tie
from squeezeray.spaces._space import Unit
from squeezeray.spaces._space import block_count

__all__ = [
    "NONE",
    "PRESET_SPACES",
    "CompressionPlan",
    "GroupSpec",
    "LayerPlan",
    "Order",
    "SearchSpace",
    "Tie",
    "Unit",
    "block_count",
    "load_space",
    "parse_preset",
    "parse_step",
    "parse_steps",
    "preset_space",
]
