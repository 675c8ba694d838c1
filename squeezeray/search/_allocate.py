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

A problem may also carry each option's *predicted latency* (seconds per call on a hardware profile,
additive over layers like the roofline it comes from). :func:`allocate` then honours a latency budget,
alone or with a byte budget, by a Lagrangian sweep: the byte DP is solved for cost + lambda x latency,
lambda bisected to the smallest value whose plan meets the latency budget. Every lambda's DP value gives a
lower bound on the optimum (weak duality), so the answer states its optimality gap in predicted cost
(``gap_cost``, 0 when the cheapest plan within the bytes already meets the latency budget).
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
        latency: Per unit, each option's predicted latency in seconds (None: the problem has no latency).
        fixed_latency: Predicted seconds of everything the units do not cover.
    """

    units: tuple[str, ...]
    options: tuple[tuple[str, ...], ...]
    nbytes: tuple[tuple[int, ...], ...]
    cost: tuple[tuple[float, ...], ...]
    fixed_bytes: int = 0
    n_weights: int = 0
    latency: tuple[tuple[float, ...], ...] | None = None
    fixed_latency: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.units)
        if not n:
            raise SqueezerayError("allocation problem: no units")
        fields = ("options", "nbytes", "cost") + (("latency",) if self.latency is not None else ())
        for field in fields:
            if len(getattr(self, field)) != n:
                raise SqueezerayError(f"allocation problem: {field} has {len(getattr(self, field))} rows for {n} units")
        for u, opts, b, c in zip(self.units, self.options, self.nbytes, self.cost):
            if not opts or len(opts) != len(b) or len(opts) != len(c):
                raise SqueezerayError(f"allocation problem: unit {u!r} has {len(opts)} options, {len(b)} sizes, "
                                      f"{len(c)} costs")
            if any(not math.isfinite(x) for x in c):
                raise SqueezerayError(f"allocation problem: unit {u!r} has a non-finite cost {list(c)}")
        for u, opts, lat in zip(self.units, self.options, self.latency or ()):
            if len(lat) != len(opts) or any(not (math.isfinite(x) and x >= 0) for x in lat):
                raise SqueezerayError(f"allocation problem: unit {u!r} needs {len(opts)} finite latencies >= 0, "
                                      f"got {list(lat)}")

    def total_bytes(self, choice: Sequence[int]) -> int:
        return self.fixed_bytes + sum(self.nbytes[u][o] for u, o in enumerate(choice))

    def predicted_cost(self, choice: Sequence[int]) -> float:
        return float(sum(self.cost[u][o] for u, o in enumerate(choice)))

    def predicted_latency(self, choice: Sequence[int]) -> float:
        """Predicted seconds of the plan (fixed + every unit's option); needs ``latency``."""
        if self.latency is None:
            raise SqueezerayError("allocation problem: no latencies were given, predicted latency is undefined")
        return float(self.fixed_latency + sum(self.latency[u][o] for u, o in enumerate(choice)))

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
    gap_cost: float = 0.0  # latency budget: predicted cost above the Lagrangian lower bound (0: optimal)
    predicted_latency: float | None = None  # seconds, when the problem has latencies
    max_latency: float | None = None  # the latency budget it was solved for (None: none)


@dataclasses.dataclass(frozen=True)
class SolvedFront:
    """The DP tables of one problem: best predicted cost for every budget bin, and how to get it."""

    problem: AllocationProblem
    resolution: int
    base_bytes: int  # fixed bytes + every unit's smallest option
    best: np.ndarray  # (n_bins,) least cost with rounded extra bytes <= bin
    choices: np.ndarray  # (n_units, n_bins) option chosen for unit u given budget bin b for units 0..u
    weights: tuple[np.ndarray, ...]
    penalty: float = 0.0  # the DP minimised cost + penalty x latency

    def allocate(self, budget_bytes: int) -> Allocation:
        """The least-cost allocation whose exact bytes fit ``budget_bytes``.

        Raises:
            SqueezerayError: the budget is below the smallest possible plan.
        """
        p = self.problem
        if budget_bytes < self.base_bytes:
            raise SqueezerayError(f"budget_bytes={budget_bytes}: below the smallest plan ({self.base_bytes} bytes)")
        b = self._bin(budget_bytes)
        choice = [0] * len(p.units)
        for u in range(len(p.units) - 1, -1, -1):
            o = int(self.choices[u, b])
            choice[u] = o
            b -= int(self.weights[u][o])
        ch = tuple(choice)
        lat = None if p.latency is None else p.predicted_latency(ch)
        return Allocation(budget_bytes, ch, p.total_bytes(ch), p.predicted_cost(ch), len(p.units) * self.resolution,
                          predicted_latency=lat)

    def objective(self, budget_bytes: int) -> float:
        """The DP's optimum (cost + penalty x latency) within ``budget_bytes``."""
        return float(self.best[self._bin(budget_bytes)])

    def _bin(self, budget_bytes: int) -> int:
        """The budget bin of ``budget_bytes`` (extra bytes over the smallest plan, rounded down; capped)."""
        return min(int((budget_bytes - self.base_bytes) // self.resolution), self.best.shape[0] - 1)

    def front(self, budgets: Sequence[int]) -> list[Allocation]:
        return [self.allocate(b) for b in budgets]


def solve_front(
    problem: AllocationProblem, *, resolution: int | None = None, max_bins: int = 20000, penalty: float = 0.0
) -> SolvedFront:
    """Solve the knapsack for every budget from the smallest to the largest plan.

    Args:
        problem: Units, options, bytes, costs.
        resolution: Bytes per budget bin (None: the range split into ``max_bins`` bins).
        max_bins: Bins when ``resolution`` is not given.
        penalty: Minimise cost + ``penalty`` x predicted latency (needs the problem's latencies; 0: cost alone).
    """
    p = problem
    mins = [min(b) for b in p.nbytes]
    span = sum(max(b) - m for b, m in zip(p.nbytes, mins))
    if resolution is None:
        resolution = max(1, math.ceil(span / max_bins))
    if not isinstance(resolution, int) or resolution < 1:
        raise SqueezerayError(f"resolution={resolution!r}: must be a positive integer number of bytes")
    if penalty and p.latency is None:
        raise SqueezerayError(f"penalty={penalty!r}: the problem has no latencies")
    costs = p.cost if not penalty else tuple(tuple(c + penalty * t for c, t in zip(cs, ts))
                                             for cs, ts in zip(p.cost, p.latency or ()))
    weights = tuple(np.array([math.ceil((x - m) / resolution) for x in b], dtype=np.int64) for b, m in zip(p.nbytes, mins))
    n_bins = int(sum(int(w.max()) for w in weights)) + 1
    inf = np.inf
    best = np.zeros(n_bins)  # no units yet: cost 0 at every budget
    choices = np.zeros((len(p.units), n_bins), dtype=np.int32)
    for u, (w, c) in enumerate(zip(weights, costs)):
        new = np.full(n_bins, inf)
        arg = np.zeros(n_bins, dtype=np.int32)
        for o, (wo, co) in enumerate(zip(w.tolist(), c)):
            cand = np.full(n_bins, inf)
            cand[wo:] = best[: n_bins - wo] + co
            better = cand < new
            new[better] = cand[better]
            arg[better] = o
        best, choices[u] = new, arg
    return SolvedFront(p, resolution, p.fixed_bytes + sum(mins), best, choices, weights, float(penalty))


def allocate(
    problem: AllocationProblem, *, max_bytes: int | None = None, max_latency: float | None = None,
    resolution: int | None = None, solved: SolvedFront | None = None, iterations: int = 24,
) -> Allocation:
    """The least-cost plan within a byte budget, a latency budget (seconds), or both.

    Args:
        problem: The knapsack (with latencies when ``max_latency`` is given).
        max_bytes: Byte budget (None: the largest plan).
        max_latency: Latency budget in seconds (None: none; then this is :meth:`SolvedFront.allocate`).
        resolution: Byte bins of the DP (see :func:`solve_front`).
        solved: The cost-only DP of ``problem`` when the caller holds it (saves one solve).
        iterations: Bisection steps on the Lagrange multiplier.

    Raises:
        SqueezerayError: no plan within ``max_bytes`` meets ``max_latency`` (the message gives the fastest).
    """
    p = problem
    budget = p.max_bytes() if max_bytes is None else int(max_bytes)
    base = solved if solved is not None and solved.penalty == 0.0 else solve_front(p, resolution=resolution)
    first = base.allocate(budget)
    if max_latency is None:
        return first
    if p.latency is None:
        raise SqueezerayError(f"max_latency={max_latency!r}: the allocation problem has no latencies")
    res = base.resolution
    if first.predicted_latency is not None and first.predicted_latency <= max_latency:
        return dataclasses.replace(first, max_latency=max_latency)
    # the fastest plan within the bytes (latency as the cost) says whether the budget can be met at all
    fastest_problem = dataclasses.replace(p, cost=p.latency)
    fastest = solve_front(fastest_problem, resolution=res).allocate(budget).choice
    if p.predicted_latency(fastest) > max_latency:
        raise SqueezerayError(f"max_latency={max_latency!r} s: no plan within {budget} bytes is that fast "
                              f"(the fastest is predicted at {p.predicted_latency(fastest):.6g} s)")
    spread_cost = sum(max(c) - min(c) for c in p.cost) or 1.0
    spread_lat = sum(max(t) - min(t) for t in p.latency) or 1.0
    lo, hi = 0.0, spread_cost / spread_lat
    best: Allocation | None = None
    # weak duality: for a plan x meeting the budget, cost(x) >= cost(x) + lam (latency(x) - max_latency), and
    # the DP's optimum of cost + lam x (units' latency) bounds that from below, for every lam >= 0
    bound = -math.inf

    def fast_enough(lam: float) -> bool:
        nonlocal best, bound
        s = solve_front(p, resolution=res, penalty=lam)
        a = s.allocate(budget)
        bound = max(bound, s.objective(budget) - lam * (max_latency - p.fixed_latency))
        ok = a.predicted_latency is not None and a.predicted_latency <= max_latency
        if ok and (best is None or a.predicted_cost < best.predicted_cost):
            best = a
        return ok

    for _ in range(60):  # grow lambda until its plan is fast enough
        if fast_enough(hi):
            break
        lo, hi = hi, 2 * hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if fast_enough(mid):
            hi = mid
        else:
            lo = mid
    if best is None:  # the multiplier never got there (ties in latency): the fastest plan within the bytes
        best = Allocation(budget, fastest, p.total_bytes(fastest), p.predicted_cost(fastest),
                          len(p.units) * res, predicted_latency=p.predicted_latency(fastest))
    return dataclasses.replace(best, gap_cost=max(0.0, best.predicted_cost - bound), max_latency=max_latency)


def brute_force(
    problem: AllocationProblem, budget_bytes: int, max_latency: float | None = None
) -> tuple[tuple[int, ...], float] | None:
    """The exact optimum by enumeration (tests; tiny problems only). None when nothing fits."""
    import itertools

    best: tuple[tuple[int, ...], float] | None = None
    for choice in itertools.product(*(range(len(o)) for o in problem.options)):
        fast = max_latency is None or problem.predicted_latency(choice) <= max_latency
        if problem.total_bytes(choice) <= budget_bytes and fast:
            c = problem.predicted_cost(choice)
            if best is None or c < best[1] - 1e-12:
                best = (choice, c)
    return best
