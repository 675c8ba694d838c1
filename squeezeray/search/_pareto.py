"""Pareto maths of the search: non-dominated masks and the hypervolume of a front."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna

from squeezeray.objectives import Direction
from squeezeray.objectives import objective_class


def hypervolume(values: np.ndarray, directions: Sequence[Direction], reference: np.ndarray) -> float:
    """Hypervolume of ``values`` (n, k) against ``reference`` (k,), with maximised columns negated."""
    if values.size == 0:
        return 0.0
    sign = np.array([1.0 if d is Direction.MINIMIZE else -1.0 for d in directions])
    loss = values * sign
    ref = reference * sign
    keep = np.all(loss < ref, axis=1)
    if not keep.any():
        return 0.0
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(loss[keep], ref))

def _pareto_numbers(trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[Direction]) -> set[int]:
    if not trials:
        return set()
    vals = np.array([t.values for t in trials], dtype=float)
    mask = pareto_mask(vals, directions)
    return {t.number for t, m in zip(trials, mask) if m}

def pareto_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Boolean (n,) mask of the non-dominated rows of ``values`` (n, k)."""
    sign = np.array([1.0 if d is Direction.MINIMIZE else -1.0 for d in directions])
    loss = values * sign
    n = loss.shape[0]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(loss <= loss[i], axis=1) & np.any(loss < loss[i], axis=1)
        keep[i] = not dominated.any()
    return keep

def _directions(names: Sequence[str]) -> list[Direction]:
    return [objective_class(n).direction for n in names]
