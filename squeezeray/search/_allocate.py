"""Bit allocation as a multiple-choice knapsack: one option per unit, a byte budget, least predicted cost.

The additive model: a plan's size is exactly the fixed bytes (everything no unit covers) plus the
sum of its units' stored bytes, and its cost (KL to the original) is *predicted* as the sum of
each unit's cost measured alone (:mod:`squeezeray.search._sensitivity`). Additivity of costs is an
approximation (EvoPress shows non-monotone cases), which is why the solver's plans seed an
evolutionary refinement instead of being the answer.

:func:`solve_front` runs one dynamic programme over a discretised budget and gives the optimum for
*every* budget at once. Each option's bytes above its unit's smallest option are rounded *up* to
whole bins of ``resolution`` bytes, so every allocation it returns fits its budget exactly; it is
optimal for the rounded sizes, hence at least as good as the true optimum for a budget smaller by
``n_units * resolution`` bytes (the stated gap). With ``resolution=1`` and integer sizes it is exact.
Tied layers (q/k/v, gate/up, or a group's ``tie``) are one unit, so they stay tied.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from squeezeray._errors import SqueezerayError


@dataclasses.dataclass(frozen=True)
class AllocationProblem:
    """Per-unit options with exact bytes and predicted costs.

    Attributes:
        units: Unit keys.
        options: Per unit, its option labels.
        nbytes: Per unit, each option's stored bytes (exact).
        cost: Per unit, each option's predicted cost (e.g. KL alone, nats/token).
        fixed_bytes: Bytes of everything the units do not cover.
        n_weights: Weights the units hold (for average bits per weight).
    """

    units: tuple[str, ...]
    options: tuple[tuple[str, ...], ...]
    nbytes: tuple[tuple[int, ...], ...]
    cost: tuple[tuple[float, ...], ...]
    fixed_bytes: int = 0
    n_weights: int = 0

    def __post_init__(self) -> None:
        n = len(self.units)
        if not n:
            raise SqueezerayError("allocation problem: no units")
        for field in ("options", "nbytes", "cost"):
            if len(getattr(self, field)) != n:
                raise SqueezerayError(f"allocation problem: {field} has {len(getattr(self, field))} rows for {n} units")
        for u, opts, b, c in zip(self.units, self.options, self.nbytes, self.cost):
            if not opts or len(opts) != len(b) or len(opts) != len(c):
                raise SqueezerayError(f"allocation problem: unit {u!r} has {len(opts)} options, {len(b)} sizes, "
                                      f"{len(c)} costs")
            if any(not math.isfinite(x) for x in c):
                raise SqueezerayError(f"allocation problem: unit {u!r} has a non-finite cost {list(c)}")

    def total_bytes(self, choice: Sequence[int]) -> int:
        return self.fixed_bytes + sum(self.nbytes[u][o] for u, o in enumerate(choice))

    def predicted_cost(self, choice: Sequence[int]) -> float:
        return float(sum(self.cost[u][o] for u, o in enumerate(choice)))

    def avg_bits(self, choice: Sequence[int]) -> float:
        """8 x the units' stored bytes over their weight count."""
        if self.n_weights <= 0:
            raise SqueezerayError("allocation problem: n_weights is not set, average bits are undefined")
        return 8.0 * (self.total_bytes(choice) - self.fixed_bytes) / self.n_weights

    def bytes_for_bits(self, bits: float) -> int:
        """The total model bytes at ``bits`` average bits per weight over the units."""
        if self.n_weights <= 0:
            raise SqueezerayError("allocation problem: n_weights is not set, average bits are undefined")
        return int(self.fixed_bytes + bits * self.n_weights / 8.0)

    def min_bytes(self) -> int:
        return self.fixed_bytes + sum(min(b) for b in self.nbytes)

    def max_bytes(self) -> int:
        return self.fixed_bytes + sum(max(b) for b in self.nbytes)


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One solved budget: the option index per unit, its exact bytes and predicted cost."""

    budget_bytes: int
    choice: tuple[int, ...]
    nbytes: int
    predicted_cost: float
    gap_bytes: int  # optimal among allocations at most this many bytes under the budget (rounding)


@dataclasses.dataclass(frozen=True)
class SolvedFront:
    """The DP tables of one problem: best predicted cost for every budget bin, and how to get it."""

    problem: AllocationProblem
    resolution: int
    base_bytes: int  # fixed bytes + every unit's smallest option
    best: np.ndarray  # (n_bins,) least cost with rounded extra bytes <= bin
    choices: np.ndarray  # (n_units, n_bins) option chosen for unit u given budget bin b for units 0..u
    weights: tuple[np.ndarray, ...]

    def allocate(self, budget_bytes: int) -> Allocation:
        """The least-cost allocation whose exact bytes fit ``budget_bytes``.

        Raises:
            SqueezerayError: the budget is below the smallest possible plan.
        """
        p = self.problem
        if budget_bytes < self.base_bytes:
            raise SqueezerayError(f"budget_bytes={budget_bytes}: below the smallest plan ({self.base_bytes} bytes)")
        b = min(int((budget_bytes - self.base_bytes) // self.resolution), self.best.shape[0] - 1)
        choice = [0] * len(p.units)
        for u in range(len(p.units) - 1, -1, -1):
            o = int(self.choices[u, b])
            choice[u] = o
            b -= int(self.weights[u][o])
        ch = tuple(choice)
        return Allocation(budget_bytes, ch, p.total_bytes(ch), p.predicted_cost(ch), len(p.units) * self.resolution)

    def front(self, budgets: Sequence[int]) -> list[Allocation]:
        return [self.allocate(b) for b in budgets]


def solve_front(problem: AllocationProblem, *, resolution: int | None = None, max_bins: int = 20000) -> SolvedFront:
    """Solve the knapsack for every budget from the smallest to the largest plan.

    Args:
        problem: Units, options, bytes, costs.
        resolution: Bytes per budget bin (None: the range split into ``max_bins`` bins).
        max_bins: Bins when ``resolution`` is not given.
    """
    p = problem
    mins = [min(b) for b in p.nbytes]
    span = sum(max(b) - m for b, m in zip(p.nbytes, mins))
    if resolution is None:
        resolution = max(1, math.ceil(span / max_bins))
    if not isinstance(resolution, int) or resolution < 1:
        raise SqueezerayError(f"resolution={resolution!r}: must be a positive integer number of bytes")
    weights = tuple(np.array([math.ceil((x - m) / resolution) for x in b], dtype=np.int64) for b, m in zip(p.nbytes, mins))
    n_bins = int(sum(int(w.max()) for w in weights)) + 1
    inf = np.inf
    best = np.zeros(n_bins)  # no units yet: cost 0 at every budget
    choices = np.zeros((len(p.units), n_bins), dtype=np.int32)
    for u, (w, c) in enumerate(zip(weights, p.cost)):
        new = np.full(n_bins, inf)
        arg = np.zeros(n_bins, dtype=np.int32)
        for o, (wo, co) in enumerate(zip(w.tolist(), c)):
            cand = np.full(n_bins, inf)
            cand[wo:] = best[: n_bins - wo] + co
            better = cand < new
            new[better] = cand[better]
            arg[better] = o
        best, choices[u] = new, arg
    return SolvedFront(p, resolution, p.fixed_bytes + sum(mins), best, choices, weights)


def brute_force(problem: AllocationProblem, budget_bytes: int) -> tuple[tuple[int, ...], float] | None:
    """The exact optimum by enumeration (tests; tiny problems only). None when nothing fits."""
    import itertools

    best: tuple[tuple[int, ...], float] | None = None
    for choice in itertools.product(*(range(len(o)) for o in problem.options)):
        if problem.total_bytes(choice) <= budget_bytes:
            c = problem.predicted_cost(choice)
            if best is None or c < best[1] - 1e-12:
                best = (choice, c)
    return best
