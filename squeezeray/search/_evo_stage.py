"""The evolutionary search's first stages: sensitivity (stored in the study), solver seeds, binding.

Run by :func:`~squeezeray.search.run_search` when the sampler is ``evo``, after the study is
opened and before the first trial:

1. measure every unit's options alone (:func:`measure_sensitivity`), each unit's rows written to
   the study's user attributes as soon as they exist, so a killed run resumes with them;
2. build the knapsack and solve it for every budget (:func:`solve_front`), with each option's predicted
   latency on the target profile when the search has a latency budget (:mod:`squeezeray.search._unit_latency`);
3. on a new study, enqueue the solver's plans at ``n_seeds`` budgets across the band (within the latency
   budget: :func:`~squeezeray.search._allocate.allocate`);
4. bind the sampler to the units, options and band, and to a screen that measures candidate plans
   on the sensitivity proxy (the layers come from the layer cache, which the sensitivity stage filled;
   they are swapped into the one original model in place and restored).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from squeezeray._errors import SqueezerayError
from squeezeray.data import TokenData
from squeezeray.models import model_dtype
from squeezeray.objectives.predicted_latency import PredictedLatency
from squeezeray.objectives.size import model_nbytes
from squeezeray.search._allocate import Allocation
from squeezeray.search._allocate import SolvedFront
from squeezeray.search._allocate import allocate
from squeezeray.search._allocate import solve_front
from squeezeray.search._evo import EvoConfig
from squeezeray.search._evo import EvoModel
from squeezeray.search._evo import EvoSampler
from squeezeray.search._evo import Genome
from squeezeray.search._evo import Screen
from squeezeray.search._sensitivity import SensitivityProbe
from squeezeray.search._sensitivity import SensitivityRow
from squeezeray.search._sensitivity import SensitivityTable
from squeezeray.search._sensitivity import measure_sensitivity
from squeezeray.search._sensitivity import unit_options
from squeezeray.search._study import solver_seed_attrs
from squeezeray.search._unit_latency import unit_latencies
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import Unit
from squeezeray.workbench import Workbench

_KEY = "sensitivity"

RemoteSensitivity = Callable[[Sequence[Unit], TokenData, bool, Callable[[str, list[SensitivityRow]], None]], bool]


@dataclasses.dataclass(frozen=True)
class EvoStage:
    """What the first stages produced (kept on the search result)."""

    table: SensitivityTable
    solved: SolvedFront
    model: EvoModel
    measured_units: int  # units this run measured in the driver's process (the rest came from the study ...)
    remote_units: int = 0  # ... or from the executor's workers

    def solver_front(self, n: int = 11) -> pd.DataFrame:
        """The solver's predicted front at ``n`` budgets across the band: bits, bytes, predicted cost."""
        p = self.model.problem
        rows = []
        for a in solver_plans(self.model, self.solved, n):
            row = {"budget_bytes": a.budget_bytes, "bytes": a.nbytes, "avg_bits": p.avg_bits(a.choice),
                   "predicted_kl": a.predicted_cost, "gap_bytes": a.gap_bytes}
            if a.predicted_latency is not None:
                row |= {"predicted_latency_ms": 1000 * a.predicted_latency, "gap_kl": a.gap_cost}
            rows.append(row)
        return pd.DataFrame(rows)


def solver_plans(model: EvoModel, solved: SolvedFront, n: int) -> list[Allocation]:
    """The solver's plans at ``n`` budgets evenly across the band (within the latency budget when there is one;
    a budget no plan meets is left out)."""
    out = []
    for budget in np.linspace(model.band[0], model.band[1], n):
        try:
            out.append(allocate(model.problem, max_bytes=int(budget), max_latency=model.max_latency, solved=solved))
        except SqueezerayError:
            if model.max_latency is None:
                raise
    return out


def sensitivity_proxy(bench: Workbench, config: EvoConfig) -> TokenData:
    ids = bench.calibration.ids[: config.sensitivity_seqs, : config.sensitivity_len]
    return TokenData.of(ids.contiguous(), f"{bench.calibration.source}, first {ids.shape[0]}x{ids.shape[1]} tokens")


def make_screen(bench: Workbench, model: EvoModel, stats: Any, layer_fn: Callable[..., Any], proxy: TokenData,
                *, keep: int = 3) -> Screen:
    """KL on ``proxy`` of whole plans (genomes over ``model``), one forward each.

    The screen keeps its own materialized (dense-weight) copies of the last ``keep`` x (layers) layer
    options it used (children of one parent share most of them), so a candidate costs about one
    forward; the layer function's layers are its own (the layer cache hands out views), so materializing
    them changes no other candidate's layer.
    """
    probe = SensitivityProbe(bench.original, proxy)
    originals = {name: bench.original.get_submodule(name) for u in model.units for name in u.layers}
    head = probe.table.head if probe.table is not None else None
    dense: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
    capacity = keep * len(originals)

    def layer(name: str, label: str, plan: Any) -> Any:
        if name == head:  # the tied table also serves the embedding: no private copy
            return layer_fn(name, originals[name], plan, stats[name])
        key = (name, label)
        if key in dense:
            dense.move_to_end(key)
            return dense[key]
        m = layer_fn(name, originals[name], plan, stats[name])
        m.materialize(model_dtype(bench.original))
        dense[key] = m
        while len(dense) > capacity:
            dense.popitem(last=False)
        return m

    def screen(genomes: Sequence[Genome]) -> list[float]:
        # a unit left dense is not swapped at all (one plan per forward, so the sets may differ; a tied
        # table must not be replaced by its own Linear, which would untie it)
        out = []
        for g in genomes:
            rep = {name: layer(name, opts[o].label, opts[o].plan)
                   for unit, opts, o in zip(model.units, model.options, g) if opts[o].plan is not None
                   for name in unit.layers}
            out.append(probe.kl(rep) if rep else 0.0)  # nothing compressed: the original itself
        return out

    return screen


def stored_rows(study: optuna.Study, digest: str) -> dict[str, list[SensitivityRow]]:
    """Rows a study already holds for the proxy ``digest``, by unit."""
    prefix = f"{_KEY}:{digest[:16]}:"
    out = {}
    for k, v in study.user_attrs.items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = [SensitivityRow.from_dict(d) for d in json.loads(v)]
    return out


def read_table(study: optuna.Study) -> SensitivityTable | None:
    """The sensitivity table a study holds (None when the study ran no sensitivity stage)."""
    proxy = study.user_attrs.get(f"{_KEY}_proxy")
    if not proxy:
        return None
    rows = stored_rows(study, proxy["digest"])
    order = study.user_attrs.get(f"{_KEY}_units") or list(rows)
    return SensitivityTable(tuple(r for u in order if u in rows for r in rows[u]), proxy["source"], proxy["digest"])


def prepare(
    study: optuna.Study, sampler: EvoSampler, bench: Workbench, space: SearchSpace, layer_names: Sequence[str],
    layer_fn: Callable[..., Any], objectives: Sequence[str], *, new_study: bool, progress: bool,
    remote: RemoteSensitivity | None = None,
) -> EvoStage:
    """Stages 1-4 of the module docstring; ``remote`` (an executor's ``measure_sensitivity``) measures the
    units the study does not hold yet on its workers, or answers False and the driver measures them."""
    config = sampler.config
    units = space.units(layer_names)
    proxy = sensitivity_proxy(bench, config)
    done = stored_rows(study, proxy.digest)
    prefix = f"{_KEY}:{proxy.digest[:16]}:"

    def store(unit: str, rows: list[SensitivityRow]) -> None:
        study.set_user_attr(prefix + unit, json.dumps([r.to_dict() for r in rows]))

    needs_h = any(o.plan is not None and o.plan.needs_hessian() for u in units for o in unit_options(u.group))
    pending = [u for u in units if u.key not in done]
    measured_here = len(pending)
    if pending and remote is not None:

        def arrived(unit: str, rows: list[SensitivityRow]) -> None:
            store(unit, rows)
            done[unit] = rows

        if remote(pending, proxy, needs_h, arrived):
            measured_here = 0
    stats = bench.stats(hessian=needs_h)
    table = measure_sensitivity(bench.original, units, stats, proxy, layer_fn=layer_fn, done=done, on_unit=store,
                                progress=progress)
    study.set_user_attr(f"{_KEY}_proxy", {"source": table.proxy, "digest": proxy.digest})
    study.set_user_attr(f"{_KEY}_units", [u.key for u in units])
    original_bytes, _ = model_nbytes(bench.original)
    problem = table.problem(units, original_bytes)
    options = tuple(tuple(unit_options(u.group)) for u in units)
    max_latency = None
    if config.max_predicted_latency_ms is not None:
        lat, fixed = unit_latencies(bench.original, units, options, layer_fn, stats,
                                    PredictedLatency(profile=bench.hardware))
        problem = dataclasses.replace(problem, latency=lat, fixed_latency=fixed)
        max_latency = config.max_predicted_latency_ms / 1000.0
    solved = solve_front(problem)
    lo = max(problem.bytes_for_bits(config.bits_min), problem.min_bytes())
    hi = min(problem.bytes_for_bits(config.bits_max), problem.max_bytes())
    # a band the space cannot reach (e.g. the token table's 8-bit floor lifts the smallest plan above
    # bits_max on a model whose table dominates) becomes the space's whole range, not an empty search
    band = (lo, hi) if hi > lo else (problem.min_bytes(), problem.max_bytes())
    grid = [solved.allocate(int(b)) for b in np.linspace(problem.min_bytes(), problem.max_bytes(), 200)]
    model = EvoModel(
        units=tuple(units), options=options, problem=problem,
        distributions=space.distributions(layer_names), size_index=list(objectives).index("size"),
        cost_index=list(objectives).index("kl"), band=band,
        frontier=tuple(sorted({(a.nbytes, a.predicted_cost) for a in grid})), max_latency=max_latency,
    )
    if max_latency is not None:  # the band's largest budget must meet the latency budget: else say why, now
        try:
            allocate(problem, max_bytes=band[1], max_latency=max_latency, solved=solved)
        except SqueezerayError as e:
            raise SqueezerayError(f"evo max_predicted_latency_ms={config.max_predicted_latency_ms!r}: {e}; "
                                  f"{PredictedLatency(profile=bench.hardware).describe()}") from None
    if new_study:
        seeded: set[tuple[int, ...]] = set()
        for a in solver_plans(model, solved, config.n_seeds):
            if a.choice in seeded:
                continue
            seeded.add(a.choice)
            study.enqueue_trial(model.params_of(a.choice), user_attrs=solver_seed_attrs(
                round(problem.avg_bits(a.choice), 4), a.predicted_cost))
    sampler.bind(model, make_screen(bench, model, stats, layer_fn, proxy) if config.screen > 1 else None)
    return EvoStage(table, solved, model, measured_here, len(pending) - measured_here)
