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
    ("accuracy", "squeezeray.objectives.accuracy:Accuracy"),
    ("label_loyalty", "squeezeray.objectives.loyalty:LabelLoyalty"),
    ("probability_loyalty", "squeezeray.objectives.loyalty:ProbabilityLoyalty"),
    ("robustness", "squeezeray.objectives.loyalty:Robustness"),
    ("logit_agreement", "squeezeray.objectives.loyalty:LogitAgreement"),
):
    OBJECTIVES.register(_name, _path)
OBJECTIVES.register("predicted_latency", "squeezeray.objectives.predicted_latency:PredictedLatency")
OBJECTIVES.register("energy", "squeezeray.objectives.energy:Energy")


def get_objective(name: str, **kwargs: object) -> BaseObjective:
    return OBJECTIVES.get(name)(**kwargs)


OBJECTIVES.register("token_label_loyalty", "squeezeray.objectives.token_loyalty:TokenLabelLoyalty")
OBJECTIVES.register("token_prob_loyalty", "squeezeray.objectives.token_loyalty:TokenProbabilityLoyalty")
OBJECTIVES.register("lat", "squeezeray.objectives.derived:LAT")
OBJECTIVES.register("parameter_efficiency", "squeezeray.objectives.derived:ParameterEfficiency")
OBJECTIVES.register("pareto_score", "squeezeray.objectives.derived:ParetoScore")
