"""Objectives: what a candidate is scored on, each with its direction, unit and provenance."""

from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance
from squeezeray.objectives._base import materialized
from squeezeray.objectives._registry import OBJECTIVES
from squeezeray.objectives._registry import get_objective

__all__ = [
    "BaseObjective",
    "Direction",
    "EvalContext",
    "Measurement",
    "OBJECTIVES",
    "Provenance",
    "get_objective",
    "materialized",
]
