"""The study's trials as the driver tells and reads them: outcomes (ok, infeasible, failed,
duplicate), the values told for a configuration that cannot exist, resume of interrupted trials,
and the trials table (measured values only)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from squeezeray._errors import PlanError
from squeezeray.objectives import objective_class
from squeezeray.objectives import objective_key
from squeezeray.search._config import SearchConfig
from squeezeray.search._executor import Evaluation
from squeezeray.search._result import TrialOutcome
from squeezeray.search._result import TrialResult
from squeezeray.search._study import duplicate_of
from squeezeray.search._study import error_of
from squeezeray.search._study import is_baseline
from squeezeray.search._study import is_duplicate
from squeezeray.search._study import is_ok
from squeezeray.search._study import mark_duplicate
from squeezeray.search._study import mark_interrupted
from squeezeray.search._study import mark_outcome
from squeezeray.search._study import outcome_of
from squeezeray.search._study import plan_key_of
from squeezeray.search._study import requeued_attrs
from squeezeray.search._study import was_interrupted
from squeezeray.search._study import write_plan
from squeezeray.search._study import write_worker
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import SearchSpace



def _finished(study: optuna.Study) -> int:
    n = 0
    for t in study.get_trials(deepcopy=False):
        if is_duplicate(t):  # closed without an evaluation (also one of a plan still in flight)
            continue
        if t.state is optuna.trial.TrialState.COMPLETE:
            n += 1
        elif t.state is optuna.trial.TrialState.FAIL and not was_interrupted(t):
            n += 1
    return n

def requeue_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead process as failed (interrupted) and queue their parameters again."""
    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        mark_interrupted(study, t)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs=requeued_attrs(t.number), skip_if_exists=False)
        n += 1
    return n

def plan_key(plan: CompressionPlan) -> str:
    """Content key of a plan (its layers' steps and any distillation), to find plans measured before."""
    import hashlib

    data = plan.to_dict()
    payload = {"layers": data.get("layers"), "distill": data.get("distill")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

def _measured_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials whose plan was measured here (complete, ok, not a duplicate of an earlier trial)."""
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if is_ok(t) and not is_duplicate(t)]

def _measured_plans(study: optuna.Study) -> dict[str, int]:
    """Plan key -> trial number of every plan this study has measured."""
    out: dict[str, int] = {}
    for t in _measured_trials(study):
        key = plan_key_of(t)
        if key:
            out.setdefault(key, t.number)
    return out

def _tell_duplicate(study: optuna.Study, trial: optuna.Trial, original: int | None) -> None:
    """A plan already measured (or in flight) is not evaluated again; the trial is closed as a duplicate."""
    mark_duplicate(trial, original)
    if original is None:  # the same plan is still being measured: nothing to copy yet
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    src = study.get_trials(deepcopy=False)[original]
    for k, v in src.constraints.items():
        trial.set_constraint(k, float(v))
    study.tell(trial, list(src.values))

def _worst_values(names: Sequence[str], ref: Mapping[str, float]) -> np.ndarray:
    """Values told for an infeasible configuration: each objective's own (``BaseObjective.infeasible_value``)."""
    return np.array([objective_class(n).infeasible_value(ref[objective_key(n)]) for n in names], dtype=float)

def _prepare_trial(
    study: optuna.Study, trial: optuna.Trial, space: SearchSpace, layer_names: Sequence[str], names: Sequence[str],
    worst: np.ndarray, t0: float,
) -> CompressionPlan | None:
    """Sample the trial's plan; an impossible combination is told infeasible here (returns None)."""
    try:
        plan = space.sample(trial, layer_names)
    except PlanError as err:
        _tell_infeasible(study, trial, names, worst, str(err), t0)
        return None
    write_plan(trial, plan)
    return plan

def _finish_trial(
    study: optuna.Study, trial: optuna.Trial, plan: CompressionPlan, ev: Evaluation, names: Sequence[str],
    worst: np.ndarray, config: SearchConfig, t0: float,
) -> None:
    """Tell the study what the evaluation of ``plan`` gave (ok, infeasible, or failed with its error)."""
    write_worker(trial, ev.worker, ev.retries)
    if ev.outcome is TrialOutcome.INFEASIBLE:
        _tell_infeasible(study, trial, names, worst, ev.error, t0)
        return
    if ev.outcome is TrialOutcome.FAILED:
        mark_outcome(trial, TrialOutcome.FAILED, error=ev.error, traceback=ev.traceback)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    meas = dict(ev.measurements)
    values = [meas[n].value for n in names]
    if not all(math.isfinite(v) for v in values):
        _tell_infeasible(study, trial, names, worst, f"non-finite objective values {values}", t0)
        return
    result = TrialResult(
        trial=trial.number, outcome=TrialOutcome.OK, plan_summary=plan.summary(), measurements=meas,
        wall_s=ev.wall_s, cache_hits=ev.cache_hits, cache_misses=ev.cache_misses,
    )
    mark_outcome(trial, TrialOutcome.OK, result=result)
    constraints = []
    if config.max_size_bytes is not None and "size" in meas:
        constraints.append(meas["size"].value - config.max_size_bytes)
    if config.max_kl is not None and "kl" in meas:
        constraints.append(meas["kl"].value - config.max_kl)
    trial.set_constraint("feasibility", 0.0)
    for i, c in enumerate(constraints):
        trial.set_constraint(f"user{i}", float(c))
    study.tell(trial, values)

def _tell_infeasible(
    study: optuna.Study, trial: optuna.Trial, names: Sequence[str], worst: np.ndarray, why: str, t0: float
) -> None:
    mark_outcome(trial, TrialOutcome.INFEASIBLE, error=why, wall_s=time.perf_counter() - t0)
    trial.set_constraint("feasibility", 1.0)  # > 0: violated
    study.tell(trial, [float(v) for v in worst])

def _trials_table(study: optuna.Study, names: Sequence[str]) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL):
            continue
        outcome = outcome_of(t)
        row: dict[str, Any] = {
            "trial": t.number, "state": t.state.name, "outcome": "interrupted" if outcome is None else outcome.value,
            "baseline": is_baseline(t), "error": error_of(t), "duplicate_of": duplicate_of(t),
        }
        # only measured values: an infeasible trial's worst-case values (what the sampler was told) stay out,
        # its columns empty and its outcome and error saying why
        measured = t.values is not None and outcome is TrialOutcome.OK
        row.update({n: (float(v) if measured else float("nan")) for n, v in zip(names, t.values or [None] * len(names))})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*_TRIAL_COLUMNS, *names])

_TRIAL_COLUMNS = ("trial", "state", "outcome", "baseline", "error", "duplicate_of")
