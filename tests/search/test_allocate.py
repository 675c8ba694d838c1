"""The knapsack solver against brute force on small random instances."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.search._allocate import AllocationProblem
from squeezeray.search._allocate import allocate
from squeezeray.search._allocate import brute_force
from squeezeray.search._allocate import solve_front


def random_problem(rng: np.random.RandomState, n_units: int, n_opts: int) -> AllocationProblem:
    nbytes, cost = [], []
    for _ in range(n_units):
        b = sorted(rng.randint(1, 40, size=n_opts).tolist())
        c = sorted(rng.rand(n_opts).tolist(), reverse=True)  # bigger options usually cost less...
        if rng.rand() < 0.3:
            rng.shuffle(c)  # ...but not always: the solver must not assume it
        nbytes.append(tuple(b))
        cost.append(tuple(c))
    return AllocationProblem(
        units=tuple(f"u{i}" for i in range(n_units)),
        options=tuple(tuple(f"o{j}" for j in range(n_opts)) for _ in range(n_units)),
        nbytes=tuple(nbytes), cost=tuple(cost), fixed_bytes=int(rng.randint(0, 100)), n_weights=64 * n_units,
    )


@pytest.mark.parametrize("seed", range(12))
def test_solver_returns_the_brute_force_optimum_for_every_budget(seed: int) -> None:
    rng = np.random.RandomState(seed)
    p = random_problem(rng, n_units=int(rng.randint(2, 6)), n_opts=int(rng.randint(2, 5)))
    solved = solve_front(p, resolution=1)
    for budget in range(p.min_bytes(), p.max_bytes() + 3):
        a = solved.allocate(budget)
        exact = brute_force(p, budget)
        assert exact is not None
        assert a.nbytes <= budget
        assert a.nbytes == p.total_bytes(a.choice)
        assert a.predicted_cost == pytest.approx(exact[1], abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_coarse_bins_keep_budgets_and_stay_within_the_stated_gap(seed: int) -> None:
    rng = np.random.RandomState(100 + seed)
    p = random_problem(rng, n_units=5, n_opts=4)
    solved = solve_front(p, resolution=3)
    for budget in range(p.min_bytes(), p.max_bytes() + 1):
        a = solved.allocate(budget)
        assert a.nbytes <= budget  # rounding up never breaks a budget
        smaller = brute_force(p, budget - a.gap_bytes)
        if smaller is not None:  # optimal at least against the true optimum of the budget less the gap
            assert a.predicted_cost <= smaller[1] + 1e-12


def test_budget_below_the_smallest_plan_is_refused() -> None:
    p = random_problem(np.random.RandomState(0), 3, 3)
    with pytest.raises(SqueezerayError, match="below the smallest plan"):
        solve_front(p).allocate(p.min_bytes() - 1)


def test_average_bits_are_eight_times_unit_bytes_over_weights() -> None:
    p = AllocationProblem(("a", "b"), (("x", "y"), ("x", "y")), ((10, 20), (30, 40)), ((1.0, 0.0), (1.0, 0.0)),
                          fixed_bytes=1000, n_weights=80)
    assert p.avg_bits((0, 1)) == pytest.approx(8 * (10 + 40) / 80)
    assert p.bytes_for_bits(p.avg_bits((0, 1))) == p.total_bytes((0, 1))


def test_malformed_problem_names_the_unit() -> None:
    with pytest.raises(SqueezerayError, match="unit 'b' has 2 options, 1 sizes"):
        AllocationProblem(("a", "b"), (("x",), ("x", "y")), ((1,), (2,)), ((0.0,), (0.0, 1.0)))


def with_latency(rng: np.random.RandomState, p: AllocationProblem) -> AllocationProblem:
    """Latencies that mostly grow with bytes (a memory-bound roofline), with some noise and a fixed part."""
    lat = tuple(tuple(float(b) * (0.5 + rng.rand()) * 1e-3 for b in bs) for bs in p.nbytes)
    return dataclasses.replace(p, latency=lat, fixed_latency=float(rng.rand()) * 1e-2)


@pytest.mark.parametrize("seed", range(10))
def test_latency_budget_meets_both_budgets_and_states_a_true_gap(seed: int) -> None:
    rng = np.random.RandomState(200 + seed)
    p = with_latency(rng, random_problem(rng, n_units=int(rng.randint(2, 6)), n_opts=int(rng.randint(2, 5))))
    solved = solve_front(p, resolution=1)
    exact_hits = checked = 0
    for budget in range(p.min_bytes(), p.max_bytes() + 1, 3):
        lats = sorted({p.predicted_latency(c) for c in itertools.product(*(range(len(o)) for o in p.options))})
        for max_latency in (lats[len(lats) // 4], lats[len(lats) // 2], lats[-1] + 1.0):
            exact = brute_force(p, budget, max_latency)
            if exact is None:
                with pytest.raises(SqueezerayError, match="max_latency=.*no plan within"):
                    allocate(p, max_bytes=budget, max_latency=max_latency, solved=solved)
                continue
            a = allocate(p, max_bytes=budget, max_latency=max_latency, solved=solved)
            checked += 1
            assert a.nbytes <= budget and a.nbytes == p.total_bytes(a.choice)
            assert a.predicted_latency == pytest.approx(p.predicted_latency(a.choice))
            assert a.predicted_latency <= max_latency
            assert a.predicted_cost >= exact[1] - 1e-12  # the optimum is a lower bound ...
            assert a.predicted_cost - a.gap_cost <= exact[1] + 1e-9  # ... and so is the stated one
            exact_hits += abs(a.predicted_cost - exact[1]) < 1e-9
    assert checked and exact_hits >= checked // 2  # the Lagrangian plan is usually the exact optimum


def test_a_latency_budget_alone_and_one_that_does_not_bind() -> None:
    rng = np.random.RandomState(7)
    p = with_latency(rng, random_problem(rng, n_units=4, n_opts=3))
    loose = allocate(p, max_latency=1e9)
    assert loose.gap_cost == 0.0 and loose.choice == solve_front(p).allocate(p.max_bytes()).choice
    everything = list(itertools.product(*(range(len(o)) for o in p.options)))
    mid = float(np.median([p.predicted_latency(c) for c in everything]))
    a = allocate(p, max_latency=mid, resolution=1)
    exact = brute_force(p, p.max_bytes(), mid)
    assert exact is not None and a.predicted_latency <= mid
    assert exact[1] - 1e-12 <= a.predicted_cost <= exact[1] + a.gap_cost + 1e-12


def test_a_latency_budget_needs_latencies() -> None:
    p = random_problem(np.random.RandomState(1), 2, 2)
    with pytest.raises(SqueezerayError, match="no latencies"):
        allocate(p, max_latency=1.0)
    with pytest.raises(SqueezerayError, match="unit 'u0' needs 2 finite latencies"):
        dataclasses.replace(p, latency=((1.0, -1.0), (0.0, 0.0)))
