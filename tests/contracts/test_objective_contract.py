"""Every registered objective passes the same contract (on the tiny model where it can run cheaply)."""

from __future__ import annotations

import inspect
import math

import pytest

from squeezeray.objectives import OBJECTIVES
from squeezeray.objectives import Direction
from squeezeray.objectives import Measurement
from squeezeray.objectives import Need
from squeezeray.objectives import Provenance

# Objectives that need lm-eval task data and a real model are covered in tests/evaluation.
TASK_BASED = {"accuracy", "label_loyalty", "probability_loyalty", "robustness"}
# Objectives run by llama.cpp need a model loaded from a GGUF file: covered in tests/objectives/test_llamacpp.py.
RUNTIME_BASED = {"llamacpp_perplexity", "llamacpp_latency"}


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_declares_name_direction_unit(name: str) -> None:
    cls = OBJECTIVES.get(name)
    assert cls.name == name
    assert isinstance(cls.direction, Direction)
    assert isinstance(cls.unit, str) and cls.unit


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_declares_what_it_is_given_and_its_infeasible_value(name: str) -> None:
    cls = OBJECTIVES.get(name)
    params: set[str] = set()
    for klass in cls.__mro__:  # an __init__ taking **kwargs hands them on to its base's
        if "__init__" in vars(klass):
            sig = inspect.signature(klass.__init__).parameters
            params |= set(sig)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
                break
    assert {n.value for n in cls.needs} == {n.value for n in Need} & params  # declared iff taken
    worst = cls.infeasible_value(1.0)
    assert math.isfinite(worst)
    assert worst > 1.0 if cls.direction is Direction.MINIMIZE else worst < 1.0  # worse than the original


@pytest.fixture(scope="module")
def candidate(tiny):  # noqa: ANN001, ANN201
    model, _ = tiny.compress(tiny.uniform("rtn-w4g32"))
    return model


@pytest.mark.parametrize("name", [n for n in OBJECTIVES.names() if n not in TASK_BASED | RUNTIME_BASED])
def test_measures_a_labelled_finite_value(name: str, tiny, candidate, monkeypatch) -> None:  # noqa: ANN001
    if name == "energy":  # this host exposes no energy counter and no power figure: model it on a profiled CPU
        monkeypatch.setattr(tiny, "hardware", "xeon-8480plus")
    m = tiny.evaluate(candidate, [name])[name]
    assert isinstance(m, Measurement)
    assert m.name == name and m.unit == OBJECTIVES.get(name).unit
    assert isinstance(m.provenance, Provenance) and m.where
    assert math.isfinite(m.value)
    assert Measurement.from_dict(m.to_dict()) == m


@pytest.mark.parametrize("name", ["kl", "token_label_loyalty", "token_prob_loyalty", "parameter_efficiency"])
def test_original_against_itself_is_perfect(name: str, tiny) -> None:  # noqa: ANN001
    value = tiny.evaluate(tiny.original, [name])[name].value
    expected = 0.0 if OBJECTIVES.get(name).direction is Direction.MINIMIZE else 1.0
    assert value == pytest.approx(expected, abs=1e-6)
