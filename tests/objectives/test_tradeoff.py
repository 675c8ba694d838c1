"""Trade-off scores (pure functions)."""

from __future__ import annotations

import math

import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.objectives import Direction
from squeezeray.objectives.tradeoff import accuracy_from_perplexity
from squeezeray.objectives.tradeoff import lat_score
from squeezeray.objectives.tradeoff import parameter_efficiency
from squeezeray.objectives.tradeoff import relative_cost
from squeezeray.objectives.tradeoff import weighted_pareto_score


def test_lat_score() -> None:
    assert lat_score(0.6, 0.6, 10.0, 10.0, 0.3) == pytest.approx(0.7)  # the original scores 1 - alpha
    assert lat_score(0.57, 0.6, 5.0, 10.0, 0.5) == pytest.approx(0.5 * 0.05 + 0.5 * 0.5)
    assert lat_score(0.0, 0.6, 5.0, 10.0, 1.0) == pytest.approx(1.0)
    assert lat_score(0.6, 0.6, 2.0, 10.0, 0.0) == pytest.approx(0.2)


def test_parameter_efficiency() -> None:
    assert parameter_efficiency(0.6, 0.6, 100, 100) == 1.0
    assert parameter_efficiency(0.57, 0.6, 50, 100) == pytest.approx(1.9)


def test_weighted_pareto_score() -> None:
    assert weighted_pareto_score(1.0, 1.0, 0.0, {"size": 1, "latency": 1, "accuracy": 1}) == pytest.approx(2 / 3)
    assert weighted_pareto_score(0.25, 0.5, 0.1, {"size": 2, "accuracy": 2}) == pytest.approx((0.5 + 0.2) / 4)
    # only proportions matter
    a = weighted_pareto_score(0.3, 0.7, 0.05, {"size": 1, "latency": 2, "accuracy": 3})
    assert weighted_pareto_score(0.3, 0.7, 0.05, {"size": 10, "latency": 20, "accuracy": 30}) == pytest.approx(a)


def test_accuracy_from_perplexity_is_geometric_mean_probability() -> None:
    nll = [0.5, 1.5, 2.5]
    ppl = math.exp(sum(nll) / 3)
    geo = math.prod(math.exp(-x) for x in nll) ** (1 / 3)
    assert accuracy_from_perplexity(ppl) == pytest.approx(geo)
    assert accuracy_from_perplexity(1.0) == 1.0


def test_relative_cost() -> None:
    assert relative_cost(10.5, 10.0, Direction.MINIMIZE) == pytest.approx(0.05)
    assert relative_cost(0.57, 0.6, Direction.MAXIMIZE) == pytest.approx(0.05)
    assert relative_cost(250, 1000, "minimize") == pytest.approx(-0.75)
    assert relative_cost(0.02, 0.0, Direction.MINIMIZE) == pytest.approx(0.02)  # zero baseline: absolute


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: lat_score(0.5, 0.6, 1, 1, 1.5), r"alpha=1.5: must be in \[0, 1\]"),
        (lambda: lat_score(0.5, 0.0, 1, 1, 0.5), "acc=0.0: must be > 0"),
        (lambda: lat_score(0.5, 0.6, 1, float("inf"), 0.5), "lat=inf: must be a finite number"),
        (lambda: parameter_efficiency(0.5, 0.6, 0, 10), "params_c=0: must be > 0"),
        (lambda: weighted_pareto_score(1, 1, 0, {"sise": 1}), "unknown term 'sise'. Did you mean: size"),
        (lambda: weighted_pareto_score(1, 1, 0, {"size": 0}), "at least one weight"),
        (lambda: weighted_pareto_score(-1, 1, 0, {"size": 1}), "size_ratio=-1: must be >= 0"),
        (lambda: weighted_pareto_score(1, 1, 2, {"size": 1}), "accuracy_loss=2"),
        (lambda: accuracy_from_perplexity(0.5), "ppl=0.5: a perplexity is at least 1"),
        (lambda: accuracy_from_perplexity("3"), "ppl='3'"),
    ],
)
def test_bad_input_names_the_field(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(SqueezerayError, match=match):
        call()
