"""The explicit objective registry."""

from __future__ import annotations

from squeezeray._errors import SqueezerayError
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
OBJECTIVES.register("llamacpp_perplexity", "squeezeray.objectives.llamacpp:LlamaCppPerplexity")
OBJECTIVES.register("llamacpp_latency", "squeezeray.objectives.llamacpp:LlamaCppLatency")


TIMED = ("latency", "energy", "lat")
"""Objectives that time the candidate's own forward passes (on its prepared kernels, ``lat`` through latency)."""


def is_timed(name: str) -> bool:
    """Whether objective ``name`` (a task-keyed name too) times the candidate's forward passes (:data:`TIMED`)."""
    return name.partition(":")[0] in TIMED


def refuse_timed(names: tuple[str, ...] | list[str], *, field: str, reason: str) -> None:
    """Refuse the timed objectives among ``names`` (before anything loads), e.g. on an offloaded model.

    Raises:
        SqueezerayError: one of :data:`TIMED` is among ``names``; the message names ``field``, it and ``reason``.
    """
    bad = [n for n in names if is_timed(n)]
    if bad:
        raise SqueezerayError(f"{field}: {bad[0]!r} cannot be measured {reason}; leave out {', '.join(TIMED)} "
                              "(e.g. size,perplexity,kl) or use predicted_latency")


def get_objective(name: str, **kwargs: object) -> BaseObjective:
    return OBJECTIVES.get(name)(**kwargs)


TASK_KEYED = ("accuracy",)  # objectives that take a task in their name: ``accuracy:<task>[@<limit>]``


def split_objective_name(name: str) -> tuple[str, str | None, int | None]:
    """``(registered name, task, limit)`` of an objective name.

    ``accuracy:arc_easy@570`` is the accuracy objective on ARC-Easy, 570 seeded items (no ``@``: all
    items); its results are keyed ``accuracy:arc_easy``, so two tasks give two columns.

    Raises:
        SqueezerayError: A task on an objective that takes none, or a limit that is not a positive integer.
    """
    base, sep, rest = name.partition(":")
    OBJECTIVES.get(base)
    if not sep:
        return base, None, None
    if base not in TASK_KEYED:
        raise SqueezerayError(f"objective {name!r}: {base} takes no task (only {', '.join(TASK_KEYED)}:<task> does)")
    task, at, limit = rest.partition("@")
    if not task:
        raise SqueezerayError(f"objective {name!r}: give the task after ':', e.g. accuracy:arc_easy")
    if not at:
        return base, task, None
    if not limit.isdigit() or int(limit) < 1:
        raise SqueezerayError(f"objective {name!r}: the limit after '@' must be a positive integer, got {limit!r}")
    return base, task, int(limit)


def objective_key(name: str) -> str:
    """The result key of an objective name (``accuracy:arc_easy@570`` -> ``accuracy:arc_easy``)."""
    return name.partition("@")[0]


def objective_class(name: str) -> type[BaseObjective]:
    """The class behind an objective name, task-keyed or not (raises with "did you mean" when unknown)."""
    return OBJECTIVES.get(split_objective_name(name)[0])


def is_objective(name: str) -> bool:
    try:
        objective_class(name)
    except SqueezerayError:
        return False
    return True


OBJECTIVES.register("token_label_loyalty", "squeezeray.objectives.token_loyalty:TokenLabelLoyalty")
OBJECTIVES.register("token_prob_loyalty", "squeezeray.objectives.token_loyalty:TokenProbabilityLoyalty")
OBJECTIVES.register("lat", "squeezeray.objectives.derived:LAT")
OBJECTIVES.register("parameter_efficiency", "squeezeray.objectives.derived:ParameterEfficiency")
OBJECTIVES.register("pareto_score", "squeezeray.objectives.derived:ParetoScore")
