"""Automated selection: one candidate from a Pareto front, under constraints and weights.

:func:`select` takes the front as a DataFrame (one row per candidate, a ``trial``
column and one column per objective), the original model's values (``baseline``)
and each objective's direction, then:

1. normalises every objective it needs to a *relative cost* against the baseline
   (:func:`squeezeray.objectives.tradeoff.relative_cost`): MINIMIZE
   ``(v − b)/|b|``, MAXIMIZE ``(b − v)/|b|``; 0 = same as the original, negative =
   better; a zero baseline (the original's KL) uses the absolute difference;
2. drops the rows that break a :class:`Constraints` limit (counting per constraint);
3. scores the rest by the weighted mean improvement ``−Σ w_k·cost_k / Σ w_k``
   (higher is better; 0.3 = "30% better than the original on the weighted mix") and
   picks the best; ties go to the lower trial number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pandas as pd

from squeezeray._errors import SqueezerayError
from squeezeray._schema import did_you_mean
from squeezeray.objectives._base import Direction
from squeezeray.objectives.tradeoff import relative_cost

TRIAL = "trial"


def _limit(name: str, value: object, *, upper: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SqueezerayError(f"constraints.{name}={value!r}: must be a finite number or None")
    v = float(value)
    if v <= 0 or (upper is not None and v >= upper):
        bound = f"in (0, {upper:g})" if upper is not None else "> 0"
        raise SqueezerayError(f"constraints.{name}={value!r}: must be {bound}")
    return v


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Hard limits a selected candidate must meet; every field is optional.

    Attributes:
        max_accuracy_drop: Largest relative quality loss, in (0, 1): 0.05 lets perplexity
            rise at most 5% over the baseline, or task accuracy fall at most 5% of the
            baseline's. It applies to every column of ``accuracy_objectives`` that the
            front has (all must hold; ``accuracy`` also names every task column ``accuracy:<task>``);
            at least one must be there.
        max_latency_ms: Largest value of the ``latency_objective`` column, in ms.
        max_size_bytes: Largest value of the ``size_objective`` column, in bytes.
        max_size_ratio: Largest size relative to the baseline's size (0.3 = at most 30%
            of the original); a separate field so bytes and ratios never get mixed up.
        max_energy_j: Largest value of the ``energy_objective`` column, in its unit
            (the ``energy`` objective reports J/token).
        accuracy_objectives: Quality columns ``max_accuracy_drop`` applies to.
        latency_objective: Column ``max_latency_ms`` reads (e.g. ``predicted_latency``).
        size_objective: Column the size limits read.
        energy_objective: Column ``max_energy_j`` reads.
    """

    max_accuracy_drop: float | None = None
    max_latency_ms: float | None = None
    max_size_bytes: float | None = None
    max_size_ratio: float | None = None
    max_energy_j: float | None = None
    accuracy_objectives: tuple[str, ...] = ("perplexity", "accuracy")
    latency_objective: str = "latency"
    size_objective: str = "size"
    energy_objective: str = "energy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_accuracy_drop", _limit("max_accuracy_drop", self.max_accuracy_drop, upper=1.0))
        for name in ("max_latency_ms", "max_size_bytes", "max_size_ratio", "max_energy_j"):
            object.__setattr__(self, name, _limit(name, getattr(self, name)))
        acc = (self.accuracy_objectives,) if isinstance(self.accuracy_objectives, str) else tuple(self.accuracy_objectives)
        if not acc or not all(isinstance(a, str) and a for a in acc):
            raise SqueezerayError(f"constraints.accuracy_objectives={self.accuracy_objectives!r}: must list column names")
        object.__setattr__(self, "accuracy_objectives", acc)
        for name in ("latency_objective", "size_objective", "energy_objective"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SqueezerayError(f"constraints.{name}={getattr(self, name)!r}: must be a column name")

    def active(self) -> dict[str, float]:
        """The limits that are set, by field name."""
        names = ("max_accuracy_drop", "max_latency_ms", "max_size_bytes", "max_size_ratio", "max_energy_j")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen candidate and why.

    Attributes:
        trial: Its trial number.
        row: Its front row (plain Python values).
        score: Weighted mean improvement over the baseline (higher is better).
        reason: Which constraints held (with values), the weights, and the margin.
        rejected: Per constraint field, how many rows it excluded (a row breaking two
            limits counts under both).
        feasible: Rows that met every constraint.
        runner_up: The second-best feasible trial, or None.
        margin: Score minus the runner-up's, or None.
        costs: The chosen row's relative cost per weighted objective (negative = better).
    """

    trial: int
    row: Mapping[str, Any]
    score: float
    reason: str
    rejected: Mapping[str, int]
    feasible: int
    runner_up: int | None
    margin: float | None
    costs: Mapping[str, float]

    def __post_init__(self) -> None:
        for name in ("row", "rejected", "costs"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (e.g. for a study's user attributes)."""
        return {f.name: dict(v) if isinstance(v, Mapping) else v
                for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}


# ------------------------------------------------------------------- helpers
def _unknown(what: str, name: str, known: list[str]) -> SqueezerayError:
    hint = did_you_mean(name, known)
    return SqueezerayError(f"{what} {name!r} is not an objective column of the front.{hint} Columns: {', '.join(known)}")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


@dataclasses.dataclass(frozen=True)
class _Check:
    """One constraint: an observed number per row, compared with ``limit`` (<=)."""

    name: str
    limit: float
    observe: Callable[[Mapping[str, float]], tuple[float, str]]  # row -> (value, "what it is")
    fmt: Callable[[float], str]


def _change(name: str, cost: float, base: float) -> str:
    return f"{name} {100 * cost:+.2f}%" if base != 0 else f"{name} {cost:+.4g} (absolute: baseline is 0)"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _num(unit: str) -> Callable[[float], str]:
    return lambda v: f"{v:.4g} {unit}".rstrip()


class _Inputs:
    """Validated front, baseline and directions (private to :func:`select`)."""

    def __init__(self, front: Any, baseline: Any, directions: Any) -> None:
        if not isinstance(front, pd.DataFrame):
            raise SqueezerayError(f"front: must be a pandas DataFrame, got {type(front).__name__}")
        if front.empty:
            raise SqueezerayError("front: is empty; nothing to select from")
        if TRIAL not in front.columns:
            raise SqueezerayError(f"front: needs a {TRIAL!r} column; it has {', '.join(map(str, front.columns))}")
        trials = front[TRIAL]
        if trials.isna().any() or not all(float(t).is_integer() for t in trials):
            raise SqueezerayError(f"front.{TRIAL}: must hold integer trial numbers, got {trials.tolist()!r}")
        if trials.duplicated().any():
            dup = sorted({int(t) for t in trials[trials.duplicated()]})
            raise SqueezerayError(f"front.{TRIAL}: trial numbers must be unique; repeated: {dup}")
        if not isinstance(baseline, Mapping) or not isinstance(directions, Mapping):
            raise SqueezerayError("baseline and directions: must be mappings of objective name to value / Direction")
        self.front = front.reset_index(drop=True)
        self.columns = [str(c) for c in front.columns if c != TRIAL]
        self.baseline = baseline
        self.directions: dict[str, Direction] = {}
        for name, d in directions.items():
            try:
                self.directions[str(name)] = Direction(d)
            except ValueError:
                raise SqueezerayError(f"directions[{name!r}]={d!r}: must be 'minimize' or 'maximize'") from None

    def column(self, name: str, what: str) -> str:
        if name not in self.columns:
            raise _unknown(what, name, self.columns)
        bad = self.front[name].isna()
        if bad.any():
            raise SqueezerayError(f"front.{name}: trial {int(self.front[TRIAL][bad].iloc[0])} has no value (NaN)")
        return name

    def base(self, name: str, what: str) -> float:
        if name not in self.baseline:
            raise SqueezerayError(f"{what}: baseline has no value for {name!r}; it has {', '.join(map(str, self.baseline))}")
        value = self.baseline[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise SqueezerayError(f"baseline[{name!r}]={value!r}: must be a finite number")
        return float(value)

    def direction(self, name: str, what: str) -> Direction:
        if name not in self.directions:
            raise SqueezerayError(f"{what}: directions has no entry for {name!r}")
        return self.directions[name]


def _checks(c: Constraints, data: _Inputs) -> list[_Check]:
    checks: list[_Check] = []
    limits = c.active()
    if "max_accuracy_drop" in limits:
        # "accuracy" also covers task-keyed columns (accuracy:arc_easy)
        cols = [col for col in data.columns for a in c.accuracy_objectives if col == a or col.startswith(f"{a}:")]
        if not cols:
            raise SqueezerayError(
                f"constraints.max_accuracy_drop needs one of the columns {', '.join(c.accuracy_objectives)}; "
                f"the front has {', '.join(data.columns)} (set accuracy_objectives)"
            )
        spec = [(a, data.base(a, "max_accuracy_drop"), data.direction(a, "max_accuracy_drop")) for a in cols]
        for a, _, _ in spec:
            data.column(a, "max_accuracy_drop")

        def drop(row: Mapping[str, float]) -> tuple[float, str]:
            worst = max(spec, key=lambda s: relative_cost(row[s[0]], s[1], s[2]))
            a, b, d = worst
            return relative_cost(row[a], b, d), f"{a} {row[a]:.4g} vs baseline {b:.4g}"

        checks.append(_Check("max_accuracy_drop", limits["max_accuracy_drop"], drop, _pct))
    for field, col_attr, unit in (
        ("max_latency_ms", "latency_objective", "ms"),
        ("max_size_bytes", "size_objective", "bytes"),
        ("max_energy_j", "energy_objective", "J"),
    ):
        if field in limits:
            col = data.column(getattr(c, col_attr), f"constraints.{field}: column")
            checks.append(_Check(field, limits[field], lambda row, col=col: (float(row[col]), col), _num(unit)))
    if "max_size_ratio" in limits:
        col = data.column(c.size_objective, "constraints.max_size_ratio: column")
        b = data.base(col, "max_size_ratio")
        if b <= 0:
            raise SqueezerayError(f"baseline[{col!r}]={b!r}: a size ratio needs a positive baseline size")
        checks.append(
            _Check("max_size_ratio", limits["max_size_ratio"], lambda row: (float(row[col]) / b, f"{col} / baseline"),
                   lambda v: f"{v:.3g}x")
        )
    return checks


def _weights(weights: Any, data: _Inputs) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise SqueezerayError(f"weights={weights!r}: must be a non-empty mapping of objective name to weight")
    out: dict[str, float] = {}
    for name, w in weights.items():
        data.column(str(name), "weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)) or w < 0:
            raise SqueezerayError(f"weights[{name!r}]={w!r}: must be a finite number >= 0")
        data.base(str(name), f"weights[{name!r}]")
        data.direction(str(name), f"weights[{name!r}]")
        out[str(name)] = float(w)
    if sum(out.values()) <= 0:
        raise SqueezerayError(f"weights={dict(weights)!r}: at least one weight must be > 0")
    return out


# -------------------------------------------------------------------- select
def select(
    front: pd.DataFrame,
    *,
    baseline: Mapping[str, float],
    directions: Mapping[str, Direction],
    constraints: Constraints,
    weights: Mapping[str, float],
) -> Selection:
    """Pick one candidate of ``front``; see the module docstring for the method.

    Args:
        front: One row per candidate: ``trial`` (int) and one column per objective.
        baseline: The original model's value per objective (every weighted objective,
            the accuracy columns under ``max_accuracy_drop``, the size column under
            ``max_size_ratio``).
        directions: Each of those objectives' direction.
        constraints: Hard limits.
        weights: Objective name -> weight >= 0 (only proportions matter).

    Returns:
        The selection, with its reason and the per-constraint rejection counts.

    Raises:
        SqueezerayError: Malformed input; an unknown objective name (with close matches);
            or no row meets every constraint (naming the constraint that excluded the
            most rows and the closest candidate's value under it).
    """
    if not isinstance(constraints, Constraints):
        raise SqueezerayError(f"constraints={constraints!r}: must be a Constraints")
    data = _Inputs(front, baseline, directions)
    w = _weights(weights, data)
    checks = _checks(constraints, data)
    total_w = sum(w.values())

    rows = data.front.to_dict("records")
    rejected = {c.name: 0 for c in checks}
    closest: dict[str, tuple[float, int, str]] = {}  # constraint -> (value, trial, what) of the nearest miss
    feasible: list[tuple[float, int, dict[str, Any], dict[str, float]]] = []
    for row in rows:
        trial = int(row[TRIAL])
        ok = True
        for c in checks:
            value, what = c.observe(row)
            if value > c.limit:
                ok = False
                rejected[c.name] += 1
                if c.name not in closest or value < closest[c.name][0]:
                    closest[c.name] = (value, trial, what)
        if not ok:
            continue
        costs = {k: relative_cost(float(row[k]), data.base(k, "weight"), data.directions[k]) for k in w}
        score = -sum(w[k] * costs[k] for k in w) / total_w
        feasible.append((score, trial, row, costs))

    if not feasible:
        order = sorted(checks, key=lambda c: -rejected[c.name])
        parts = []
        for c in order:
            if rejected[c.name]:
                v, t, what = closest[c.name]
                parts.append(
                    f"{c.name}={c.fmt(c.limit)} excluded {rejected[c.name]} of {len(rows)} "
                    f"(closest: trial {t} at {c.fmt(v)}, {what})"
                )
        raise SqueezerayError("no candidate meets the constraints: " + "; ".join(parts))

    feasible.sort(key=lambda f: (-f[0], f[1]))
    score, trial, row, costs = feasible[0]
    runner = feasible[1] if len(feasible) > 1 else None

    held = []
    for c in checks:
        v, what = c.observe(row)
        held.append(f"{c.name}: {c.fmt(v)} <= {c.fmt(c.limit)} ({what})")
    lines = [f"trial {trial} chosen from {len(rows)} candidates ({len(feasible)} feasible)."]
    lines.append("Constraints held: " + ("; ".join(held) if held else "none set") + ".")
    if any(rejected.values()):
        lines.append("Rejected: " + ", ".join(f"{k} {n}" for k, n in rejected.items() if n) + ".")
    lines.append(
        "Weights: " + ", ".join(f"{k} {w[k] / total_w:.3g}" for k in w)
        + "; change against the baseline (negative = better): "
        + ", ".join(_change(k, costs[k], data.base(k, "weight")) for k in w) + "."
    )
    if runner is None:
        lines.append(f"Score {score:.4g} (weighted mean improvement over the baseline); no runner-up.")
    else:
        lines.append(
            f"Score {score:.4g} (weighted mean improvement over the baseline), {score - runner[0]:.4g} ahead of "
            f"runner-up trial {runner[1]} ({runner[0]:.4g})."
        )
    return Selection(
        trial=trial,
        row={str(k): _plain(v) for k, v in row.items()},
        score=score,
        reason=" ".join(lines),
        rejected=rejected,
        feasible=len(feasible),
        runner_up=None if runner is None else runner[1],
        margin=None if runner is None else score - runner[0],
        costs=costs,
    )
