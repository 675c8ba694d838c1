"""The evolutionary sampler: inside the budget band, never a plan already in the study."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from squeezeray.search._allocate import AllocationProblem
from squeezeray.search._allocate import solve_front
from squeezeray.search._evo import EvoConfig
from squeezeray.search._evo import EvoModel
from squeezeray.search._evo import EvoSampler
from squeezeray.search._sensitivity import unit_options
from squeezeray.spaces import preset_space

LAYERS = [f"model.layers.{b}.{m}" for b in range(4) for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
    "mlp.down_proj")]


def synthetic_model(seed: int = 0) -> EvoModel:
    """The per-layer space over a 4-block layout, with sizes growing in bits and random sensitivities."""
    space = preset_space("per-layer")
    units = space.units(LAYERS)
    rng = np.random.RandomState(seed)
    options = tuple(tuple(unit_options(u.group)) for u in units)
    nbytes, cost = [], []
    for u, opts in zip(units, options):
        width = 1000 * len(u.layers)
        bits = [float(o.label.split("-w")[1].split("g")[0]) for o in opts]
        nbytes.append(tuple(int(width * b / 8 + rng.randint(0, 20)) for b in bits))
        scale = rng.lognormal(0, 1)
        cost.append(tuple(scale * 2.0 ** (-2 * b) for b in bits))
    problem = AllocationProblem(tuple(u.key for u in units), tuple(tuple(o.label for o in opts) for opts in options),
                                tuple(nbytes), tuple(cost), fixed_bytes=5000,
                                n_weights=sum(1000 * len(u.layers) for u in units))
    band = (problem.bytes_for_bits(2.5), problem.bytes_for_bits(5.0))
    return EvoModel(tuple(units), options, problem, space.distributions(LAYERS), 0, 1, band)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampler_stays_in_band_and_never_repeats_a_plan(seed: int) -> None:
    model = synthetic_model(seed)
    sampler = EvoSampler(config=EvoConfig(n_seeds=4), seed=seed)
    sampler.bind(model)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    solved = solve_front(model.problem)
    seeds = {solved.allocate(int(b)).choice for b in np.linspace(*model.band, 4)}
    for choice in seeds:
        study.enqueue_trial(model.params_of(choice))
    seen = set()
    rng = np.random.RandomState(seed)
    for i in range(60):
        trial = study.ask({k: optuna.distributions.CategoricalDistribution(list(v))
                           for k, v in model.distributions.items()})
        genome = model.genome_of(trial.params)
        assert genome is not None
        assert genome not in seen, f"trial {i} repeats a plan"
        seen.add(genome)
        if i >= len(seeds):  # proposed by the sampler, not enqueued
            assert model.in_band(genome), f"trial {i}: {model.problem.total_bytes(genome)} outside {model.band}"
        size = model.problem.total_bytes(genome)
        measured = model.problem.predicted_cost(genome) * float(rng.lognormal(0, 0.1))  # not additive
        trial.set_user_attr("outcome", "ok")
        study.tell(trial, [float(size), measured])
    assert sampler.proposed == 60 - len(seeds)


def test_mutation_keeps_size_near_the_parent() -> None:
    model = synthetic_model(3)
    sampler = EvoSampler(config=EvoConfig(size_band=0.01, crossover_prob=0.0), seed=0)
    sampler.bind(model)
    parent = solve_front(model.problem).allocate(model.problem.bytes_for_bits(3.5)).choice
    size = model.problem.total_bytes(parent)
    children = [sampler._mutate(parent, 1) for _ in range(50)]
    kids = [c for c in children if c is not None]
    assert kids
    for c in kids:
        assert c != parent
        assert abs(model.problem.total_bytes(c) - size) <= 0.01 * size


def test_params_round_trip_through_the_genome() -> None:
    model = synthetic_model(0)
    genome = tuple(i % len(o) for i, o in enumerate(model.options))
    assert model.genome_of(model.params_of(genome)) == genome


def test_bad_evo_settings_name_the_field() -> None:
    from squeezeray._errors import SqueezerayError

    with pytest.raises(SqueezerayError, match="bits_min=5.0, bits_max=3.0"):
        EvoConfig(bits_min=5.0, bits_max=3.0)
    with pytest.raises(SqueezerayError, match="evo candidates=0"):
        EvoConfig(candidates=0)


def test_screen_picks_the_least_measured_kl_among_the_least_regret_children() -> None:
    model = synthetic_model(2)
    calls: list[list[tuple[int, ...]]] = []
    rng = np.random.RandomState(7)
    truth: dict[tuple[int, ...], float] = {}

    def screen(genomes):  # noqa: ANN001, ANN202 - a measured KL that disagrees with the additive prediction
        calls.append(list(genomes))
        return [truth.setdefault(g, float(rng.rand())) for g in genomes]

    sampler = EvoSampler(config=EvoConfig(crossover_prob=0.0, candidates=16, screen=5), seed=0)
    sampler.bind(model, screen)
    parent = solve_front(model.problem).allocate(model.problem.bytes_for_bits(3.5)).choice
    population = [(parent, float(model.problem.total_bytes(parent)), model.problem.predicted_cost(parent))]
    seen = {parent}
    for _ in range(10):
        child = sampler.propose(population, seen)
        assert child is not None and child not in seen and model.in_band(child)
        screened = calls[-1]
        assert 2 <= len(screened) <= 5 and len(set(screened)) == len(screened)
        assert child == min(screened, key=truth.__getitem__)  # the screen decides, not the prediction
        assert all(g not in seen and model.in_band(g) for g in screened)
        seen.add(child)
    assert sampler.screened == sum(len(c) for c in calls)


def test_no_screen_proposes_the_least_regret_child() -> None:
    model = synthetic_model(2)
    sampler = EvoSampler(config=EvoConfig(crossover_prob=0.0, screen=0), seed=0)
    sampler.bind(model, lambda gs: pytest.fail("screen=0 must not measure"))  # type: ignore[arg-type,return-value]
    parent = solve_front(model.problem).allocate(model.problem.bytes_for_bits(3.5)).choice
    child = sampler.propose([(parent, 0.0, 0.0)], {parent})
    assert child is not None and sampler.screened == 0


def test_a_latency_budget_binds_the_seeds_and_every_proposal() -> None:
    import dataclasses

    from squeezeray.search._allocate import allocate
    from squeezeray.search._evo_stage import solver_plans

    base = synthetic_model(4)
    rng = np.random.RandomState(4)
    # latency roughly follows bytes, but not exactly (some units are slower per byte): the budget reshapes plans
    speed = rng.lognormal(0, 0.5, size=len(base.units))
    lat = tuple(tuple(1e-6 * b * s for b in bs) for bs, s in zip(base.problem.nbytes, speed))
    problem = dataclasses.replace(base.problem, latency=lat, fixed_latency=1e-3)
    solved = solve_front(problem)
    mid = problem.bytes_for_bits(4.0)
    free = solved.allocate(mid)
    max_latency = 0.97 * problem.predicted_latency(free.choice)  # binds at 4 bits
    model = dataclasses.replace(base, problem=problem, max_latency=max_latency)
    bound = allocate(problem, max_bytes=mid, max_latency=max_latency, solved=solved)
    assert bound.predicted_latency <= max_latency < problem.predicted_latency(free.choice)
    assert bound.predicted_cost >= free.predicted_cost and bound.gap_cost >= 0.0
    seeds = solver_plans(model, solved, 4)
    assert seeds and all(problem.predicted_latency(a.choice) <= max_latency for a in seeds)
    sampler = EvoSampler(config=EvoConfig(n_seeds=4), seed=0)
    sampler.bind(model)
    population = [(a.choice, float(a.nbytes), a.predicted_cost) for a in seeds]
    seen = {a.choice for a in seeds}
    for _ in range(30):
        child = sampler.propose(population, seen)
        assert child is not None and child not in seen
        assert problem.predicted_latency(child) <= max_latency and model.in_band(child)
        seen.add(child)
        population.append((child, float(problem.total_bytes(child)), problem.predicted_cost(child)))


def test_a_latency_budget_needs_latencies_and_a_positive_value() -> None:
    import dataclasses

    from squeezeray._errors import SqueezerayError

    with pytest.raises(SqueezerayError, match="latency budget needs the allocation problem's latencies"):
        dataclasses.replace(synthetic_model(0), max_latency=1.0)
    with pytest.raises(SqueezerayError, match="evo max_predicted_latency_ms=-1"):
        EvoConfig(max_predicted_latency_ms=-1)
