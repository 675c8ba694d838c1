"""Per-layer compression plans and the spaces they are searched in."""

from squeezeray.spaces._plan import CompressionPlan
from squeezeray.spaces._plan import LayerPlan
from squeezeray.spaces._plan import parse_step
from squeezeray.spaces._plan import parse_steps

__all__ = ["CompressionPlan", "LayerPlan", "parse_step", "parse_steps"]
