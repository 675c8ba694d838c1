"""The explicit objective registry."""

from __future__ import annotations

from squeezeray._registry import Registry
from squeezeray.objectives._base import BaseObjective

OBJECTIVES: Registry[BaseObjective] = Registry("objective", BaseObjective)

for _name, _path in (
    ("size", "squeezeray.objectives.size:Size"),
    ("perplexity", "squeezeray.objectives.perplexity:Perplexity"),
    ("kl", "squeezeray.objectives.kl:KLDivergence"),
    ("latency", "squeezeray.objectives.latency:Latency"),
):
    OBJECTIVES.register(_name, _path)


def get_objective(name: str, **kwargs: object) -> BaseObjective:
    return OBJECTIVES.get(name)(**kwargs)
