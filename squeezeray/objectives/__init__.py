"""Objectives: what a candidate is scored on, each with its direction, unit and provenance."""

from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Need
from squeezeray.objectives._base import Provenance
from squeezeray.objectives._base import materialized
from squeezeray.objectives._registry import OBJECTIVES
from squeezeray.objectives._registry import get_objective
from squeezeray.objectives._registry import is_objective
from squeezeray.objectives._registry import objective_class
from squeezeray.objectives._registry import objective_key
from squeezeray.objectives._registry import split_objective_name

__all__ = [
    "BaseObjective",
    "Direction",
    "EvalContext",
    "Measurement",
    "Need",
    "OBJECTIVES",
    "Provenance",
    "get_objective",
    "is_objective",
    "objective_class",
    "objective_key",
    "split_objective_name",
    "materialized",
]
