"""The study record: what a search writes on its Optuna study and on each trial, written and read here only.

Study level: the search driver writes a :class:`StudyHeader` when a study starts, the original's final-objective
measurements once (:func:`write_baseline_final`) and each re-measured trial's (:func:`write_final`);
``--resume``, export and the UI read them back through :meth:`StudyHeader.read`, :func:`read_baseline_final`
and :func:`read_finals`.

Trial level: the attributes of :class:`TrialKey`. A trial's plan is stored as its versioned JSON when it is
sampled (:func:`write_plan`) and read back with :func:`plan_of`; its outcome is written by :func:`mark_outcome`
(or :func:`mark_duplicate`) and read by :func:`outcome_of`. The table of re-measured trials that the search
returns, export reads and the UI draws is built by :func:`front_table`.

No other module spells these attribute keys.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd

from squeezeray._errors import SqueezerayError
from squeezeray.objectives import Measurement
from squeezeray.search._result import TrialOutcome
from squeezeray.search._result import TrialResult
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import SearchSpace

_REQUIRED = ("objectives", "space", "model", "model_fingerprint", "calibration", "hardware", "seed")
_OPTIONAL = ("dtype", "data", "memory_estimate", "device")
_BASELINE_FINAL = "baseline_final"
_FINAL = "final:"  # + trial number
_STOPPED = "stopped"
LEGACY_DTYPE = "float32"
"""The dtype of a study recorded before studies recorded one: models loaded in float32 then."""


@dataclasses.dataclass(frozen=True)
class StudyHeader:
    """What a search records about itself when its study starts.

    Attributes:
        objectives: Search-stage objective names, in the study's direction order.
        space: The space searched (after the expert rules), as ``SearchSpace.to_dict()``.
        model: The model reference the search loaded.
        model_fingerprint: SHA-256 of its weights as loaded (dtype included).
        calibration: Description of the calibration tokens (sources and digests).
        hardware: The hardware profile.
        seed: The sampler's seed.
        dtype: The dtype the weights were held in.
        data: The data record (config and each token set's source and digest), when recorded.
        memory_estimate: The pre-load memory estimate (``Footprint.to_dict()``), when one was made.
        device: Where the driver's model ran (``device_description``: the GPU by name, or the host CPU); None in
            studies recorded before studies said so (they ran on the CPU).
    """

    objectives: tuple[str, ...]
    space: Mapping[str, Any]
    model: str
    model_fingerprint: str
    calibration: str
    hardware: str
    seed: int
    dtype: str = LEGACY_DTYPE
    data: Mapping[str, Any] | None = None
    memory_estimate: Mapping[str, Any] | None = None
    device: str | None = None

    def write(self, study: optuna.Study) -> None:
        for key, value in self.to_dict().items():
            if value is not None:
                study.set_user_attr(key, value)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["objectives"] = list(self.objectives)
        return out

    @classmethod
    def read(cls, study: optuna.Study) -> StudyHeader:
        """The header of ``study``.

        Raises:
            SqueezerayError: the study lacks a required record (not a squeezeray search).
        """
        attrs = study.user_attrs
        missing = [k for k in _REQUIRED if k not in attrs]
        if missing:
            raise SqueezerayError(f"study {study.study_name!r}: not a squeezeray search (no {', '.join(missing)})")
        values = {k: attrs[k] for k in (*_REQUIRED, *_OPTIONAL) if k in attrs}
        values["objectives"] = tuple(values["objectives"])
        return cls(**values)


def open_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Open an Optuna RDB storage, surviving another process creating the same schema at the same moment.

    Optuna creates its tables on open; two processes opening a new SQLite file together (a search starting
    while ``squeezeray status`` or the UI polls it, or two workers) race on ``CREATE TABLE`` and the loser
    gets "table ... already exists" (or a duplicate schema-version row). The schema is complete once the winner commits, so the loser retries.
    """
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as exc:
            racing = "already exists" in str(exc) or "alembic_version" in str(exc)  # tables, or the version row
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def write_baseline_final(study: optuna.Study, measurements: Mapping[str, Mapping[str, Any]]) -> None:
    """The original model's final-objective measurements (``Measurement.to_dict()`` by result key)."""
    study.set_user_attr(_BASELINE_FINAL, dict(measurements))


def read_baseline_final(study: optuna.Study) -> dict[str, Mapping[str, Any]] | None:
    """What :func:`write_baseline_final` wrote, or None before the front was first re-measured."""
    value = study.user_attrs.get(_BASELINE_FINAL)
    return None if value is None else dict(value)


def write_final(study: optuna.Study, number: int, measurements: Mapping[str, Mapping[str, Any]]) -> None:
    """Trial ``number``'s final-objective measurements (finished trials are immutable in Optuna, so they live on
    the study)."""
    study.set_user_attr(f"{_FINAL}{number}", json.dumps(dict(measurements)))


def read_final(study: optuna.Study, number: int) -> dict[str, Mapping[str, Any]] | None:
    value = study.user_attrs.get(f"{_FINAL}{number}")
    return None if not value else json.loads(value)


def read_finals(study: optuna.Study) -> dict[int, dict[str, Mapping[str, Any]]]:
    """Every re-measured trial's final-objective measurements, by trial number (ascending)."""
    out = {int(k[len(_FINAL):]): json.loads(v) for k, v in study.user_attrs.items() if k.startswith(_FINAL) and v}
    return dict(sorted(out.items()))


def write_stopped(study: optuna.Study, why: str) -> None:
    """Why the search loop stopped before its trial budget."""
    study.set_user_attr(_STOPPED, why)


# ------------------------------------------------------------------ trials
class TrialKey(str, enum.Enum):
    """The user attributes a search writes on a trial."""

    OUTCOME = "outcome"  # TrialOutcome value; absent on a trial its process died in (interrupted)
    ERROR = "error"  # why it is infeasible or failed
    TRACEBACK = "traceback"  # the tail of a crash's traceback
    WALL_S = "wall_s"  # seconds until an infeasible trial was told
    RESULT = "result"  # TrialResult.to_dict() as JSON (measured trials)
    BASELINE = "baseline"  # queued as a uniform baseline
    PLAN = "plan"  # CompressionPlan.to_dict(): the plan sampled (absent in studies from before it was stored)
    PLAN_SUMMARY = "plan_summary"  # step label -> number of layers
    PLAN_KEY = "plan_key"  # content key of the plan (finds plans measured before)
    DUPLICATE_OF = "duplicate_of"  # the trial that measured this plan (-1: still in flight)
    INTERRUPTED = "interrupted"  # left RUNNING by a dead process, marked failed on resume
    REQUEUED_FROM = "requeued_from"  # the interrupted trial whose parameters this one re-runs
    WORKER = "worker"  # which worker evaluated it (Ray)
    RETRIES = "retries"  # one line per attempt lost with its worker
    SOLVER_SEED = "solver_seed"  # evo: queued from the knapsack solver's front
    BUDGET_BITS = "budget_bits"  # evo: the solver seed's average bits per weight
    PREDICTED_KL = "predicted_kl"  # evo: the solver's predicted KL of the seed


def baseline_attrs() -> dict[str, Any]:
    """The user attributes of a queued uniform baseline (``study.enqueue_trial(params, user_attrs=...)``)."""
    return {TrialKey.BASELINE.value: True}


def requeued_attrs(number: int) -> dict[str, Any]:
    """The user attributes of a trial queued again with the parameters of interrupted trial ``number``."""
    return {TrialKey.REQUEUED_FROM.value: number}


def solver_seed_attrs(budget_bits: float, predicted_kl: float) -> dict[str, Any]:
    """The user attributes of a trial queued from the evo solver's front."""
    return {TrialKey.SOLVER_SEED.value: True, TrialKey.BUDGET_BITS.value: budget_bits,
            TrialKey.PREDICTED_KL.value: predicted_kl}


def mark_interrupted(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Record that ``trial`` was left RUNNING by a dead process (its state is then set to FAIL)."""
    study._storage.set_trial_user_attr(trial._trial_id, TrialKey.INTERRUPTED.value, True)


def write_plan(trial: optuna.Trial, plan: CompressionPlan) -> None:
    """The plan sampled for ``trial``: its versioned JSON (read back by :func:`plan_of`) and its summary."""
    trial.set_user_attr(TrialKey.PLAN.value, plan.to_dict())
    trial.set_user_attr(TrialKey.PLAN_SUMMARY.value, plan.summary())


def write_plan_key(trial: optuna.Trial, key: str) -> None:
    trial.set_user_attr(TrialKey.PLAN_KEY.value, key)


def write_worker(trial: optuna.Trial, worker: str, retries: Sequence[str]) -> None:
    """Which worker evaluated ``trial`` and the attempts lost before (each written only when there is one)."""
    if worker:
        trial.set_user_attr(TrialKey.WORKER.value, worker)
    if retries:
        trial.set_user_attr(TrialKey.RETRIES.value, list(retries))


def mark_outcome(
    trial: optuna.Trial, outcome: TrialOutcome, *, error: str | None = None, traceback: str | None = None,
    wall_s: float | None = None, result: TrialResult | None = None,
) -> None:
    """Record how ``trial`` ended (before it is told); each of the rest is written when given."""
    trial.set_user_attr(TrialKey.OUTCOME.value, TrialOutcome(outcome).value)
    if error is not None:
        trial.set_user_attr(TrialKey.ERROR.value, error)
    if traceback is not None:
        trial.set_user_attr(TrialKey.TRACEBACK.value, traceback)
    if wall_s is not None:
        trial.set_user_attr(TrialKey.WALL_S.value, wall_s)
    if result is not None:
        trial.set_user_attr(TrialKey.RESULT.value, json.dumps(result.to_dict()))


def mark_duplicate(trial: optuna.Trial, original: int | None) -> None:
    """Record that ``trial``'s plan was measured by trial ``original`` (ok), or is still in flight (None: failed)."""
    if original is None:
        trial.set_user_attr(TrialKey.DUPLICATE_OF.value, -1)
        mark_outcome(trial, TrialOutcome.FAILED, error="duplicate of a plan still being measured")
        return
    trial.set_user_attr(TrialKey.DUPLICATE_OF.value, original)
    mark_outcome(trial, TrialOutcome.OK)


def outcome_of(t: optuna.trial.FrozenTrial) -> TrialOutcome | None:
    """How ``t`` ended; None when no outcome was recorded (its process died first)."""
    value = t.user_attrs.get(TrialKey.OUTCOME.value)
    return None if value is None else TrialOutcome(value)


def is_ok(t: optuna.trial.FrozenTrial) -> bool:
    """``t`` was recorded ok (measured, or a duplicate of a measured plan)."""
    return outcome_of(t) is TrialOutcome.OK


def error_of(t: optuna.trial.FrozenTrial) -> str:
    return str(t.user_attrs.get(TrialKey.ERROR.value, ""))


def is_baseline(t: optuna.trial.FrozenTrial) -> bool:
    """``t`` was queued as a uniform baseline."""
    return bool(t.user_attrs.get(TrialKey.BASELINE.value, False))


def is_duplicate(t: optuna.trial.FrozenTrial) -> bool:
    """``t`` was closed without an evaluation: its plan was measured, or in flight, in another trial."""
    return TrialKey.DUPLICATE_OF.value in t.user_attrs


def duplicate_of(t: optuna.trial.FrozenTrial) -> int | None:
    """The trial that measured ``t``'s plan (-1: it was still in flight), or None for a trial evaluated itself."""
    return t.user_attrs.get(TrialKey.DUPLICATE_OF.value)


def was_interrupted(t: optuna.trial.FrozenTrial) -> bool:
    return bool(t.user_attrs.get(TrialKey.INTERRUPTED.value))


def plan_key_of(t: optuna.trial.FrozenTrial) -> str | None:
    return t.user_attrs.get(TrialKey.PLAN_KEY.value) or None


def plan_summary_of(t: optuna.trial.FrozenTrial) -> dict[str, int]:
    """Step label -> number of layers of ``t``'s plan (empty when none was sampled)."""
    return dict(t.user_attrs.get(TrialKey.PLAN_SUMMARY.value, {}))


def plan_label(t: optuna.trial.FrozenTrial) -> str:
    """``t``'s plan summary on one line (``12x gptq-w4g128 | 18x rtn-w8``): the ``plan`` column of the front."""
    return " | ".join(f"{n}x {lbl}" for lbl, n in sorted(plan_summary_of(t).items()))


def plan_of(
    t: optuna.trial.FrozenTrial, *, space: SearchSpace, layer_names: Iterable[str], name: str | None = None,
) -> CompressionPlan:
    """The plan trial ``t`` was sampled with, named ``name`` (None: as stored).

    Read from its stored JSON (:func:`write_plan`; the version is checked). A trial of a study written before
    plans were stored has none: its plan is rebuilt from its parameters with ``space`` over ``layer_names`` (the
    legacy path; the same parameters give the same plan).
    """
    data = t.user_attrs.get(TrialKey.PLAN.value)
    if data is None:  # legacy: a study from before the plan was stored on its trials
        return space.plan_from_params(t.params, layer_names, name=name or "")
    plan = CompressionPlan.from_dict(data)
    return plan if name is None else dataclasses.replace(plan, name=name)


def front_table(
    study: optuna.Study, finals: Mapping[int, Mapping[str, Measurement]], keys: Sequence[str],
) -> pd.DataFrame:
    """The re-measured trials, one row each in the order of ``finals``.

    Columns: ``trial``, ``baseline`` (a uniform baseline trial), the final objectives (``keys`` when there are no
    rows), ``delta:<k>`` / ``delta_stderr:<k>`` for an objective scored paired with the original (its
    difference and standard error), then ``plan`` (:func:`plan_label`).
    """
    trials = study.get_trials(deepcopy=False)
    rows = []
    for number, meas in finals.items():
        t = trials[number]
        row: dict[str, Any] = {"trial": number, "baseline": is_baseline(t)}
        row.update({k: float(m.value) for k, m in meas.items()})
        for k, m in meas.items():
            details = m.details or {}
            if "delta_vs_original" in details:
                row[f"delta:{k}"] = float(details["delta_vs_original"])
                row[f"delta_stderr:{k}"] = float(details["delta_stderr"])
        row["plan"] = plan_label(t)
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["trial", "baseline", *keys, "plan"])
    return pd.DataFrame(rows)
