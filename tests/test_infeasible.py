"""Infeasible is a property of the configuration; a numerical failure inside a technique is a failed trial."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from squeezeray._errors import InfeasibleStepError
from squeezeray._errors import PlanError
from squeezeray.compress import compress_layer
from squeezeray.search._executor import evaluate_plan
from squeezeray.search._result import TrialOutcome
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from tests.conftest import correlated_inputs


def test_a_step_that_cannot_fit_the_layer_is_infeasible() -> None:
    lin = nn.Linear(90, 16)  # 2:4 needs a width divisible by 4
    with pytest.raises(PlanError, match="does not divide the input width 90") as err:
        compress_layer("l", lin, parse_steps("wanda-2:4"), LayerStats.synthetic(correlated_inputs(64, 90)))
    assert "step 'wanda-2:4'" in str(err.value)
    assert issubclass(InfeasibleStepError, PlanError) and issubclass(InfeasibleStepError, ValueError)


def _broken_stats(width: int) -> LayerStats:
    stats = LayerStats.synthetic(correlated_inputs(64, width))
    return dataclasses.replace(stats, hessian=torch.full((width, width), float("nan")))


def test_a_numerical_failure_is_not_told_as_infeasible() -> None:
    lin = nn.Linear(32, 16)
    with pytest.raises(ValueError, match="not positive definite") as err:
        compress_layer("l", lin, parse_steps("gptq-w4g16"), _broken_stats(32))
    assert not isinstance(err.value, PlanError)


def test_a_trial_whose_technique_fails_numerically_is_failed_with_its_traceback() -> None:
    lin = nn.Linear(32, 16)
    plan = CompressionPlan({"l": parse_steps("gptq-w4g16")})

    def evaluate(p: CompressionPlan) -> dict:
        compress_layer("l", lin, p.layers["l"], _broken_stats(32))
        return {}

    result = evaluate_plan(evaluate, plan)
    assert result.outcome is TrialOutcome.FAILED
    assert "not positive definite" in result.error and "gptq" in result.traceback
    infeasible = evaluate_plan(lambda p: compress_layer("l", nn.Linear(90, 16), parse_steps("wanda-2:4"),
                                                        LayerStats.synthetic(correlated_inputs(64, 90))),
                               CompressionPlan({"l": parse_steps("wanda-2:4")}))
    assert infeasible.outcome is TrialOutcome.INFEASIBLE


def _indefinite_hessian(width: int) -> torch.Tensor:
    """Symmetric with one eigenvalue slightly below zero: 1% damping is not enough, 10% is."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64))
    eig = torch.ones(width, dtype=torch.float64)
    eig[0] = -0.05
    return ((q * eig) @ q.T).float()


@pytest.mark.parametrize("steps", ["gptq-w4g16", "sparsegpt-s50"])
def test_raised_damping_is_recorded_on_the_layer(steps: str) -> None:
    from squeezeray.compress import apply_plan

    width = 32
    stats = dataclasses.replace(LayerStats.synthetic(correlated_inputs(64, width)), hessian=_indefinite_hessian(width))
    model = nn.Sequential(nn.Linear(width, 16))
    reports = apply_plan(model, CompressionPlan({"0": parse_steps(steps)}), {"0": stats})
    technique = steps.split("-")[0]
    assert reports[0].notes == (f"{technique}: Hessian damping raised from 0.01 to 0.1 (not positive definite at 0.01)",)
    assert model[0].fmt.notes == reports[0].notes
    assert type(model[0].fmt).from_dict(model[0].fmt.to_dict()) == model[0].fmt  # kept through the cache/export
    clean = nn.Sequential(nn.Linear(width, 16))
    plain = apply_plan(clean, CompressionPlan({"0": parse_steps(steps)}), {"0": LayerStats.synthetic(correlated_inputs(64, width))})
    assert plain[0].notes == () and "notes" not in clean[0].fmt.to_dict()  # headers (and sizes) as before


def test_duplicates_do_not_use_up_the_trial_budget() -> None:
    import optuna

    from squeezeray.search._trials import _finished

    study = optuna.create_study()
    for attrs, state in (({}, "COMPLETE"), ({"duplicate_of": 0}, "COMPLETE"), ({"duplicate_of": -1}, "FAIL"),
                         ({"interrupted": True}, "FAIL"), ({}, "FAIL")):
        t = study.ask()
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        if state == "COMPLETE":
            study.tell(t, 1.0)
        else:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert _finished(study) == 2  # the measured trial and the real failure
