"""Evolutionary refinement of bit allocations, as an Optuna sampler.

:class:`EvoSampler` is a :class:`optuna.samplers.BaseSampler` that proposes whole plans (one
option per unit). It is bound to an :class:`EvoModel` (the units, their options with exact
bytes and the predicted cost of each option alone) once the sensitivity stage has run; the
search seeds the study with the allocation solver's plans across the budget band and the
uniform baselines, and the sampler refines from there, in the manner of EvoPress
(Sieberling et al., ICML 2025, https://arxiv.org/abs/2410.14649):

* **mutation** (level switch at constant size): a parent from the measured Pareto front (size,
  cost) gets a few units moved one level (the next smaller or larger option), then other units
  are moved one level, the cheapest per byte by the sensitivity table first, to pull the size
  back within ``size_band`` of the parent's; of ``candidates`` such children the ``screen`` with
  the least predicted regret (predicted cost above the solver's front at its size) are measured
  on the sensitivity proxy (KL, a few hundred tokens, one forward each on the same tokens, so the
  comparison is paired) and the least is proposed (without a screen: the least predicted regret);
* **crossover**: two front members of neighbouring size mix their units (uniformly); the child
  must lie between them in size (within the band);
* **never outside the budget band** ``[bits_min, bits_max]`` and **never a plan already in the
  study** (deduplicated by plan content, enqueued and running trials included).

Multi-fidelity: every option is scored alone on a few hundred proxy tokens (sensitivity), every
mutated candidate on the same few hundred tokens (the screen), every proposed plan on the search
proxy (KL, a thousand tokens), and the survivors on the front on several thousand held-out tokens
(the search's re-measure stage).

Call order (as Optuna drives it): ``infer_relative_search_space`` -> ``sample_relative`` (the
whole plan) -> ``sample_independent`` (only for parameters the plan does not cover, i.e. never
once bound; before binding every parameter is sampled at random).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_int
from squeezeray._schema import check_number
from squeezeray.search._allocate import AllocationProblem
from squeezeray.search._sensitivity import UnitOption
from squeezeray.search._sensitivity import option_label
from squeezeray.search._study import is_ok
from squeezeray.spaces import Unit

Genome = tuple[int, ...]
Screen = Callable[[Sequence[Genome]], list[float]]  # genomes -> their KL on the screening proxy


@dataclasses.dataclass(frozen=True)
class EvoConfig:
    """Settings of the sensitivity stage, the solver seeds and the evolutionary refinement.

    Attributes:
        bits_min, bits_max: The budget band, in average bits per weight over the searched layers
            (8 x their stored bytes / their weight count; the token table counts when the space holds it).
            Proposals never leave it. Clamped to what the space can reach; a band wholly outside it
            becomes the space's whole range.
        n_seeds: Solver plans seeded at evenly spaced budgets across the band.
        mutation_units: At most this many units switch option in one mutation (before size repair).
        size_band: A mutated child stays within this fraction of its parent's size.
        crossover_prob: Chance that a proposal is a crossover (when the front has two members).
        candidates: Mutations generated per proposal.
        screen: Of those, this many (least predicted regret first) are measured on the screening proxy and
            the least KL is proposed; 0 (default) or 1: no screen, the least predicted regret is proposed. On
            SmolLM2 (experiments/search_quality, one run each) a screen of 8 made a trial about 2x slower
            (about 10 s instead of 5 s) and took the front 4-5% below the solver's seeds at 3.6 and 3.9 bits,
            against 1-2.5% without it.
        sensitivity_seqs, sensitivity_len: Proxy the sensitivity stage measures each option on
            (the first calibration sequences, truncated).
        max_predicted_latency_ms: A latency budget (None: none): no plan whose predicted latency on the
            search's hardware profile (roofline, one decode step at batch 1 and context 128, summed over
            layers: :class:`~squeezeray.objectives.predicted_latency.PredictedLatency`) exceeds it is seeded
            or proposed; the seeds solve both budgets (:func:`~squeezeray.search._allocate.allocate`).
    """

    bits_min: float = 2.5
    bits_max: float = 5.0
    n_seeds: int = 8
    mutation_units: int = 3
    size_band: float = 0.005
    crossover_prob: float = 0.25
    candidates: int = 8
    screen: int = 0
    sensitivity_seqs: int = 1
    sensitivity_len: int = 128
    max_predicted_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_predicted_latency_ms is not None:
            check_number(self.max_predicted_latency_ms, field="max_predicted_latency_ms", minimum=1e-9, where="evo ")
        for f in ("bits_min", "bits_max", "size_band", "crossover_prob"):
            check_number(getattr(self, f), field=f, where="evo ")
        if not self.bits_min < self.bits_max:
            raise SqueezerayError(f"evo bits_min={self.bits_min!r}, bits_max={self.bits_max!r}: need bits_min < bits_max")
        if self.crossover_prob > 1:
            raise SqueezerayError(f"evo crossover_prob={self.crossover_prob!r}: must be at most 1")
        check_int(self.screen, field="screen", minimum=0, where="evo ")
        for f in ("n_seeds", "mutation_units", "candidates", "sensitivity_seqs", "sensitivity_len"):
            check_int(getattr(self, f), field=f, where="evo ")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EvoModel:
    """What the sampler needs to know about the space: units, options, bytes, predicted costs.

    Attributes:
        units: Sampling units, in the problem's order.
        options: Per unit, its options (same order as ``problem.options``).
        problem: Exact bytes and predicted cost per option.
        distributions: Every parameter name and its choices.
        size_index, cost_index: Positions of the size and cost objectives in a trial's values.
        band: (lowest, highest) total bytes a proposal may have.
        frontier: (bytes, least predicted cost) of the solver's front, by bytes: a child's predicted
            regret (its predicted cost above the front at its size) ranks the candidates.
        max_latency: Predicted seconds a proposal may not exceed (None: no latency budget; needs the
            problem's latencies).
    """

    units: tuple[Unit, ...]
    options: tuple[tuple[UnitOption, ...], ...]
    problem: AllocationProblem
    distributions: Mapping[str, tuple[str, ...]]
    size_index: int
    cost_index: int
    band: tuple[int, int]
    frontier: tuple[tuple[int, float], ...] = ()
    max_latency: float | None = None

    def __post_init__(self) -> None:
        if self.max_latency is not None and self.problem.latency is None:
            raise SqueezerayError("evo model: a latency budget needs the allocation problem's latencies")
        labels = tuple(tuple(o.label for o in opts) for opts in self.options)
        if labels != self.problem.options:
            raise SqueezerayError("evo model: the options differ from the allocation problem's")
        object.__setattr__(self, "_index", [{lbl: i for i, lbl in enumerate(ls)} for ls in labels])
        object.__setattr__(self, "levels", tuple(tuple(sorted(range(len(b)), key=lambda o, b=b: (b[o], o)))
                                                 for b in self.problem.nbytes))

    def genome_of(self, params: Mapping[str, Any]) -> Genome | None:
        """The option index per unit that ``params`` select (None: an option the table does not hold)."""
        out = []
        for u, index in zip(self.units, self._index):  # type: ignore[attr-defined]
            label = option_label(u.group, params, u.key)
            if label not in index:
                return None
            out.append(index[label])
        return tuple(out)

    def params_of(self, genome: Genome) -> dict[str, str]:
        out: dict[str, str] = {}
        for u, opts, o in zip(self.units, self.options, genome):
            for suffix, value in opts[o].params.items():
                out[f"{u.key}/{suffix}"] = value
        return out

    def regret(self, genome: Genome) -> float:
        """Predicted cost above the solver's front at the genome's size (the predicted cost without a frontier)."""
        cost = self.problem.predicted_cost(genome)
        if not self.frontier:
            return cost
        xs = np.array([f[0] for f in self.frontier], dtype=float)
        ys = np.array([f[1] for f in self.frontier], dtype=float)
        return cost - float(np.interp(self.problem.total_bytes(genome), xs, ys))

    def in_band(self, genome: Genome) -> bool:
        """Inside the byte band, and within the latency budget when there is one."""
        lo, hi = self.band
        if not lo <= self.problem.total_bytes(genome) <= hi:
            return False
        return self.max_latency is None or self.problem.predicted_latency(genome) <= self.max_latency


def _front(points: Sequence[tuple[Genome, float, float]]) -> list[tuple[Genome, float, float]]:
    """Non-dominated (size, cost) points, by size."""
    pts = sorted(points, key=lambda p: (p[1], p[2]))
    out: list[tuple[Genome, float, float]] = []
    best = np.inf
    for p in pts:
        if p[2] < best:
            out.append(p)
            best = p[2]
    return out


class EvoSampler(optuna.samplers.BaseSampler):
    """Solver-seeded evolutionary search over per-unit options; see the module docstring.

    Args:
        config: Band, mutation and crossover settings.
        seed: Random seed.
    """

    def __init__(self, *, config: EvoConfig | None = None, seed: int | None = None) -> None:
        self.config = config or EvoConfig()
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.model: EvoModel | None = None
        self.screen: Screen | None = None
        self.proposed = 0  # children proposed (seeds and baselines are enqueued, not proposed)
        self.screened = 0  # candidates measured by the screen

    def bind(self, model: EvoModel, screen: Screen | None = None) -> None:
        """Start proposing plans over ``model`` (after the sensitivity stage); ``screen`` measures candidates."""
        self.model = model
        self.screen = screen

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    # ------------------------------------------------------------ Optuna hooks
    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self.model is None:
            return {}
        return {k: CategoricalDistribution(list(v)) for k, v in self.model.distributions.items()}

    def sample_relative(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self.model is None or not search_space or trial.system_attrs.get("fixed_params"):
            return {}
        population, seen = self._population(study, trial.number)
        child = self.propose(population, seen)
        if child is None:
            budget = "" if self.model.max_latency is None else f", at most {self.model.max_latency:.6g} s predicted"
            raise SqueezerayError("evo sampler: no unseen plan inside the budget band could be found "
                                  f"(band {self.model.band} bytes{budget}, {len(seen)} plans seen)")
        self.proposed += 1
        return self.model.params_of(child)

    def sample_independent(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    # ------------------------------------------------------------- the search
    def _population(self, study: optuna.Study, current: int) -> tuple[list[tuple[Genome, float, float]], set[Genome]]:
        assert self.model is not None
        m = self.model
        population: list[tuple[Genome, float, float]] = []
        seen: set[Genome] = set()
        for t in study.get_trials(deepcopy=False):
            if t.number == current:
                continue
            params = t.params or t.system_attrs.get("fixed_params") or {}
            g = m.genome_of(params) if params else None
            if g is None:
                continue
            seen.add(g)
            if (t.state is optuna.trial.TrialState.COMPLETE and is_ok(t)
                    and t.values is not None):
                population.append((g, float(t.values[m.size_index]), float(t.values[m.cost_index])))
        return population, seen

    def propose(self, population: Sequence[tuple[Genome, float, float]], seen: set[Genome]) -> Genome | None:
        """A new genome inside the band that is not in ``seen`` (None when none was found)."""
        assert self.model is not None
        m = self.model
        front = _front([p for p in population if m.in_band(p[0])]) or _front(population)
        if not front:
            front = [(self._random_genome(), 0.0, 0.0)]
        for attempt in range(200):
            wide = 1 + attempt // 40  # widen the mutation when close neighbours are all taken
            if len(front) >= 2 and self._rng.rand() < self.config.crossover_prob:
                child = self._crossover(front)
                ok = child is not None and child not in seen and m.in_band(child)
                if ok:
                    return child
                continue
            parent = front[self._rng.randint(len(front))][0]
            kids = [self._mutate(parent, wide) for _ in range(self.config.candidates)]
            kids = sorted({k for k in kids if k is not None and k not in seen and m.in_band(k)}, key=m.regret)
            if kids:
                return self._pick(kids)
        return None

    def _pick(self, kids: Sequence[Genome]) -> Genome:
        """The screened best of the least-regret ``kids`` (sorted), or the first without a screen."""
        top = list(kids[: self.config.screen])
        if self.screen is None or len(top) < 2:
            return kids[0]
        kls = self.screen(top)
        self.screened += len(top)
        return top[int(np.argmin(kls))]

    def _random_genome(self) -> Genome:
        assert self.model is not None
        return tuple(int(self._rng.randint(len(o))) for o in self.model.problem.options)

    def _mutate(self, parent: Genome, wide: int) -> Genome | None:
        """Switch a few units one level up or down, then repair the size with the cheapest level moves."""
        assert self.model is not None
        p = self.model.problem
        ranks = self.model.levels  # per unit: options from smallest to largest
        n = len(parent)
        target = p.total_bytes(parent)
        child = list(parent)
        k = int(self._rng.randint(1, self.config.mutation_units * wide + 1))
        changed: set[int] = set()
        for u in self._rng.choice(n, size=min(k, n), replace=False):
            u = int(u)
            pos = ranks[u].index(child[u])
            steps = [d for d in (-1, 1) if 0 <= pos + d < len(ranks[u])]
            if steps:
                child[u] = ranks[u][pos + int(self._rng.choice(steps))]
                changed.add(u)
        if not changed:
            return None
        band = self.config.size_band * target
        for _ in range(2 * n):
            delta = p.total_bytes(child) - target
            if abs(delta) <= band:
                return tuple(child)
            step = -1 if delta > 0 else 1  # too big: move a unit down a level; too small: up
            best: tuple[float, int, int] | None = None
            for u in self._rng.choice(n, size=min(16, n), replace=False):
                u = int(u)
                if u in changed:
                    continue
                pos = ranks[u].index(child[u])
                if not 0 <= pos + step < len(ranks[u]):
                    continue
                o = ranks[u][pos + step]
                db = abs(p.nbytes[u][o] - p.nbytes[u][child[u]]) or 1
                # down: least cost added per byte saved; up: most cost saved (most negative) per byte spent
                score = (p.cost[u][o] - p.cost[u][child[u]]) / db
                if best is None or score < best[0]:
                    best = (score, u, o)
            if best is None:
                return None
            child[best[1]] = best[2]
            changed.add(best[1])
        return tuple(child) if abs(p.total_bytes(child) - target) <= band else None

    def _crossover(self, front: Sequence[tuple[Genome, float, float]]) -> Genome | None:
        assert self.model is not None
        p = self.model.problem
        i = int(self._rng.randint(len(front) - 1))
        a, b = front[i][0], front[i + 1][0]
        mask = self._rng.rand(len(a)) < 0.5
        child = tuple(x if pick else y for x, y, pick in zip(a, b, mask))
        lo, hi = sorted((p.total_bytes(a), p.total_bytes(b)))
        size = p.total_bytes(child)
        band = self.config.size_band * lo
        return child if lo - band <= size <= hi + band and child not in (a, b) else None
