"""The search driver: an Optuna study it owns (ask/tell), staged evaluation, persistence and resume.

Call order of :func:`run_search`:

1. load the model into a :class:`~squeezeray.workbench.Workbench` (or take one);
2. resolve the space, apply the expert rules for the hardware profile;
3. open or create the study in its RDB storage (SQLite file by default);
   on resume, trials left RUNNING by a killed process are marked failed
   (``interrupted``) and their parameters queued again;
4. queue the uniform baselines (new studies only);
5. ask -> build the plan -> compress through the layer cache -> measure the
   *search objectives* (cheap: size and the KL proxy) -> tell, until
   ``n_trials`` trials have finished (completed, infeasible or crashed); the
   evaluations run on an executor: in-process one at a time (default), or on
   Ray workers (:class:`~squeezeray.search.RayExecutor`), the driver asking as
   many trials as the executor has room for and telling each as it finishes;
6. re-measure the trials on (and near) the front on the *final objectives*
   (held-out perplexity, measured latency, ...), store them on the trials;
7. build the front table and select a configuration under the constraints.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from tqdm.auto import tqdm

from squeezeray._device import resolve_device
from squeezeray._errors import SqueezerayError
from squeezeray._memory import peak_resident_bytes
from squeezeray._offload import placement
from squeezeray.models import dtype_name
from squeezeray.objectives import Measurement
from squeezeray.objectives import objective_key
from squeezeray.objectives._registry import is_timed
from squeezeray.search._cache import LayerCache
from squeezeray.search._config import Resume
from squeezeray.search._config import SearchConfig
from squeezeray.search._config import make_sampler
from squeezeray.search._evo import EvoSampler
from squeezeray.search._eta import ESTIMATE_AFTER
from squeezeray.search._eta import estimate_remaining
from squeezeray.search._executor import BaseExecutor
from squeezeray.search._executor import EvalJob
from squeezeray.search._executor import EvaluateFn
from squeezeray.search._executor import InProcessExecutor
from squeezeray.search._footprint import preflight
from squeezeray.search._footprint import solves_in_float64
from squeezeray.search._study import StudyHeader
from squeezeray.search._study import baseline_attrs
from squeezeray.search._study import front_table
from squeezeray.search._study import open_storage
from squeezeray.search._study import plan_of
from squeezeray.search._study import read_baseline_final
from squeezeray.search._study import read_final
from squeezeray.search._study import write_baseline_final
from squeezeray.search._study import write_final
from squeezeray.search._study import write_plan_key
from squeezeray.search._study import write_stopped
from squeezeray.search._pareto import _directions
from squeezeray.search._pareto import _pareto_numbers
from squeezeray.search._pareto import hypervolume
from squeezeray.search._pareto import pareto_mask
from squeezeray.search._result import TrialOutcome
from squeezeray.search._trials import _finish_trial
from squeezeray.search._trials import _finished
from squeezeray.search._trials import _measured_plans
from squeezeray.search._trials import _measured_trials
from squeezeray.search._trials import _prepare_trial
from squeezeray.search._trials import _tell_duplicate
from squeezeray.search._trials import _trials_table
from squeezeray.search._trials import _worst_values
from squeezeray.search._trials import plan_key
from squeezeray.search._trials import requeue_interrupted
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import NONE
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import load_space
from squeezeray.workbench import Workbench


@dataclasses.dataclass
class SearchResult:
    """What a search returns.

    Attributes:
        study: The Optuna study (in its storage).
        space: The space searched (after the expert rules).
        front: Re-measured trials on the final objectives: one row per trial with objective
            columns, ``trial``, ``plan`` (summary), ``pareto`` (on the final objectives).
        trials: Every finished trial with its search-stage values and outcome.
        baseline: The original model's final-objective values.
        selected: The recommended trial number (None if no selector ran).
        selection_reason: Why it was picked.
        rule_notes: What the expert rules removed or noted, one line each.
        data_notes: What the split of the data sources did, one line each.
    """

    study: optuna.Study
    space: SearchSpace
    front: pd.DataFrame
    trials: pd.DataFrame
    baseline: dict[str, float]
    selected: int | None = None
    selection_reason: str = ""
    rule_notes: tuple[str, ...] = ()
    layer_names: tuple[str, ...] = ()
    data_notes: tuple[str, ...] = ()  # what the data split did (a source held out in part, overlaps dropped)
    sensitivity: pd.DataFrame | None = None  # evo: every unit's options measured alone (unit, option, kl, nbytes, bits)
    solver_front: pd.DataFrame | None = None  # evo: the knapsack's predicted front across the band

    def plan(self, trial: int | None = None) -> CompressionPlan:
        """The plan of ``trial`` (default: the selected one)."""
        number = self.selected if trial is None else trial
        if number is None:
            raise SqueezerayError("no trial was selected; pass a trial number")
        t = self.study.get_trials(deepcopy=False)[number]
        return plan_of(t, space=self.space, layer_names=self.layer_names, name=f"{self.study.study_name}#{number}")

def default_baselines(space: SearchSpace, layer_names: Sequence[str]) -> list[dict[str, str]]:
    """Uniform configurations users would try first: each quantize option alone, then each prune option alone."""
    dists = space.distributions(layer_names)
    quant = [c for c in dict.fromkeys(v for k, vs in dists.items() if k.endswith("/quant") for v in vs) if c != NONE]
    prune = [c for c in dict.fromkeys(v for k, vs in dists.items() if k.endswith("/prune") for v in vs) if c != NONE]
    out = [space.uniform_params({"quant": q, "prune": NONE, "lowrank": NONE}, layer_names) for q in quant]
    out += [space.uniform_params({"quant": NONE, "prune": p, "lowrank": NONE}, layer_names) for p in prune]
    unique = []
    for p in out:
        if p not in unique:
            unique.append(p)
    return unique

class _Progress:
    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, initial=done, desc="trials", unit="trial", disable=not enabled)

    def update(self, front: int, hv: float, hit_rate: float, extra: Mapping[str, str] | None = None) -> None:
        peak = peak_resident_bytes()  # what this process has held at most, against the estimate printed first
        memory = {} if peak is None else {"peak_mem": f"{peak / (1 << 30):.2f}GiB"}
        self.bar.set_postfix(front=front, hv=f"{hv:.3g}", cache_hits=f"{hit_rate:.0%}", **memory, **dict(extra or {}))
        self.bar.update(1)

    def note(self, line: str) -> None:
        """A line above the bar (printed only when the bar is shown)."""
        if not self.bar.disable:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

def run_search(
    config: SearchConfig,
    *,
    bench: Workbench | None = None,
    resume: bool | str | Resume = False,
    progress: bool = True,
    evaluate: EvaluateFn | None = None,
    executor: BaseExecutor | None = None,
) -> SearchResult:
    """Run (or resume) a search; see the module docstring for the call order.

    Args:
        config: The search settings.
        bench: A workbench already holding the model (tests, notebooks); loaded from
            ``config.model`` otherwise.
        resume: True (or ``Resume.CONTINUE``): continue the existing study of this name;
            False (``Resume.NEW``): start it, refused if it exists; ``Resume.AUTO``: either.
        progress: Show the progress bar.
        evaluate: Replaces the trial evaluation (plan -> measurements), run in-process;
            used by tests that inject failures.
        executor: Where evaluations run (default: in-process, one at a time); e.g. a
            :class:`~squeezeray.search.RayExecutor`. Closed when the search loop ends.
    """
    if evaluate is not None and executor is not None:
        raise SqueezerayError("evaluate= and executor= exclude each other; give the executor its evaluation")
    space = load_space(config.space)
    footprint = None
    if bench is None:  # refuse a run that cannot fit before its weights load
        limit = None if config.memory_limit_gib is None else int(config.memory_limit_gib * (1 << 30))
        footprint = preflight(config.model, config.dtype, config.data, limit_bytes=limit,
                              device=resolve_device(config.device), offload=config.offload,
                              timed=any(is_timed(n) for n in (*config.objectives, *config.final_objectives)),
                              float64_solve=solves_in_float64(space.steps()))
        if progress:
            print(footprint.describe(), file=sys.stderr, flush=True)
        bench = Workbench.load(config.model, config.data, progress=False, dtype=config.dtype, device=config.device,
                               offload=config.offload)
    bench.hardware = config.hardware
    if bench.cache_dir is None:
        bench.cache_dir = config.workdir / "cache"
    layer_names = tuple(bench.layers)
    rule_notes: tuple[str, ...] = ()
    shapes = {n: (int(w.shape[0]), int(w.shape[1])) for n in layer_names
              if (w := getattr(bench.original.get_submodule(n), "weight", None)) is not None and w.dim() == 2}
    space, rule_notes = _apply_rules(space, config, layer_names, shapes)
    if not space.units(layer_names):
        raise SqueezerayError(f"space {space.name!r} matches no layer of this model")

    names = list(config.objectives)
    directions = _directions(names)
    study_name = config.resolved_study_name(bench.loaded.source.ref)
    url = config.storage_url(bench.loaded.source.ref)
    storage = open_storage(url)
    existing = study_name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    mode = Resume.of(resume)
    if existing and mode is Resume.NEW:
        raise SqueezerayError(
            f"study {study_name!r} already exists in {url}; pass --resume to continue it "
            "or --study-name for a new one"
        )
    if mode is Resume.CONTINUE and not existing:
        raise SqueezerayError(f"--resume: no study {study_name!r} in {url}")
    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=True,
        directions=[d.value for d in directions],
        sampler=make_sampler(config.sampler, config.seed, config.n_trials, config.evo),
    )
    fingerprint = bench.loaded.fingerprint()
    if existing:
        saved = StudyHeader.read(study)
        if list(saved.objectives) != names:
            raise SqueezerayError(f"--resume: study optimises {list(saved.objectives)}, not {names}")
        if saved.model_fingerprint != fingerprint:
            raise SqueezerayError(
                f"--resume: the study was run on a different model or dtype (fingerprint differs; the study's dtype "
                f"{saved.dtype!r}, this run's {dtype_name(bench.loaded.dtype)!r})")
        if saved.calibration != bench.calibration.source:
            raise SqueezerayError(
                f"--resume: the study calibrated on {saved.calibration!r}, this run on "
                f"{bench.calibration.source!r}; give the same data options as the search"
            )
        requeue_interrupted(study)
    else:
        StudyHeader(
            objectives=tuple(names), space=space.to_dict(), model=bench.loaded.source.ref,
            model_fingerprint=fingerprint, calibration=bench.calibration.source, hardware=config.hardware,
            seed=config.seed, dtype=dtype_name(bench.loaded.dtype), data=bench.data_record(),
            memory_estimate=None if footprint is None else footprint.to_dict(),
            device=placement(bench.loaded.model),
        ).write(study)
        for params in _baseline_params(space, layer_names, config):
            study.enqueue_trial(params, user_attrs=baseline_attrs())

    cache = LayerCache(config.workdir / "cache")
    layer_fn = cache.layer_fn(fingerprint, bench.calibration.digest)
    ref_values = _reference_values(bench, names)
    stage = None
    worst = _worst_values(names, ref_values)

    def default_evaluate(plan: CompressionPlan) -> dict[str, Measurement]:
        return bench.evaluate_plan(plan, names, layer_fn=layer_fn)

    executor = executor or InProcessExecutor(evaluate or default_evaluate, cache.stats)
    job = EvalJob(
        objectives=tuple(names), space=space, model_ref=bench.loaded.source.ref, data=bench.data,
        model_fingerprint=fingerprint, calibration_digest=bench.calibration.digest,
        cache_dir=(config.workdir / "cache").resolve(), hardware=config.hardware,
        dtype=dtype_name(bench.loaded.dtype), device=config.device, offload=bench.loaded.offload is not None,
    )
    bar: _Progress | None = None
    lookups = [0, 0]  # cache hits, misses of this run's evaluations

    def step_done() -> None:
        done = _measured_trials(study)
        front = _pareto_numbers(done, directions)
        vals = np.array([done_t.values for done_t in done if done_t.number in front]) if front else np.empty((0, len(names)))
        hit_rate = lookups[0] / sum(lookups) if sum(lookups) else 0.0
        assert bar is not None
        bar.update(len(front), hypervolume(vals, directions, worst), hit_rate, executor.progress())

    in_flight: dict[int, tuple[optuna.Trial, CompressionPlan, float]] = {}
    measured = _measured_plans(study)
    duplicates = 0
    walls: list[tuple[float, int]] = []  # (wall_s, cache misses) of this run's measured trials
    exhausted = ""
    try:
        executor.start(job, bench)
        if isinstance(study.sampler, EvoSampler):  # its workers (if any) measure the sensitivity stage
            from squeezeray.search import _evo_stage

            stage = _evo_stage.prepare(study, study.sampler, bench, space, layer_names, layer_fn, names,
                                       new_study=not existing, progress=progress,
                                       remote=executor.measure_sensitivity)
        bar = _Progress(config.n_trials, _finished(study), progress)
        while True:
            finished = _finished(study)
            # ask as many trials as the executor has room for (never more than the budget needs)
            while not exhausted and finished + len(in_flight) < config.n_trials and executor.capacity() > 0:
                trial, t0 = study.ask(), time.perf_counter()
                plan = _prepare_trial(study, trial, space, layer_names, names, worst, t0)
                if plan is None:  # infeasible before it ran: told already
                    finished += 1
                    step_done()
                    continue
                key = plan_key(plan)
                write_plan_key(trial, key)
                if key in measured or key in {plan_key(p) for _, p, _ in in_flight.values()}:
                    duplicates += 1
                    _tell_duplicate(study, trial, measured.get(key))
                    if duplicates > 2 * config.n_trials + 20:  # the space is (nearly) exhausted
                        exhausted = (f"stopped after {duplicates} proposals of plans already measured "
                                     f"({_finished(study)} of {config.n_trials} trials finished)")
                        write_stopped(study, exhausted)
                        rule_notes += (f"search: {exhausted}",)
                        break
                    continue
                in_flight[trial.number] = (trial, plan, t0)
                executor.submit(trial.number, plan)
            if not in_flight:
                break
            for number, ev in executor.wait():
                trial, plan, t0 = in_flight.pop(number)
                lookups[0] += ev.cache_hits
                lookups[1] += ev.cache_misses
                _finish_trial(study, trial, plan, ev, names, worst, config, t0)
                if ev.outcome is TrialOutcome.OK:
                    measured[plan_key(plan)] = trial.number
                    walls.append((ev.wall_s, ev.cache_misses))
                    if len(walls) in ESTIMATE_AFTER and (left := config.n_trials - _finished(study)) > 0:
                        bar.note(estimate_remaining(walls, left).describe())
                step_done()
    finally:
        executor.close()
        if bar is not None:
            bar.close()

    final = _remeasure(study, space, layer_names, bench, config, layer_fn)
    trials_df = _trials_table(study, names)
    return SearchResult(
        study=study, space=space, front=final["front"], trials=trials_df, baseline=final["baseline"],
        rule_notes=rule_notes, layer_names=layer_names, data_notes=bench.data_notes,
        sensitivity=None if stage is None else stage.table.frame(),
        solver_front=None if stage is None else stage.solver_front(),
    )

def _apply_rules(
    space: SearchSpace, config: SearchConfig, layer_names: Sequence[str], shapes: Mapping[str, tuple[int, int]]
) -> tuple[SearchSpace, tuple[str, ...]]:
    """Prune the space with the expert rules for the target hardware and the layers' shapes; every removal is
    explained."""
    from squeezeray.hwprofiles import get_profile
    from squeezeray.search._rule_apply import apply_rules
    from squeezeray.search._rule_apply import explain

    profile = get_profile(config.hardware)
    outcome = apply_rules(space, profile, allow=config.allow, layer_names=layer_names, layer_shapes=shapes)
    return outcome.space, tuple(line for line in explain(outcome).splitlines() if line.strip())

def _baseline_params(space: SearchSpace, layer_names: Sequence[str], config: SearchConfig) -> list[dict[str, str]]:
    if config.baselines is None:
        return default_baselines(space, layer_names)
    out = []
    covered = list(space.assign(layer_names))
    for preset in config.baselines:
        plan = CompressionPlan.uniform(preset, covered)
        try:
            out.append(space.params_for(plan, layer_names))
        except SqueezerayError as err:
            raise SqueezerayError(f"baseline {preset!r} is not in space {space.name!r}: {err}") from None
    return out

def _reference_values(bench: Workbench, names: Sequence[str]) -> dict[str, float]:
    return {k: m.value for k, m in bench.evaluate(bench.original, names).items()}

def _remeasure(
    study: optuna.Study, space: SearchSpace, layer_names: Sequence[str], bench: Workbench, config: SearchConfig,
    layer_fn: Callable[..., Any],
) -> dict[str, Any]:
    """Re-measure the search-stage front (and the next best by crowding) on the final objectives."""
    final_names = list(config.final_objectives)
    final_keys = [objective_key(n) for n in final_names]  # result columns (accuracy:arc_easy@570 -> accuracy:arc_easy)
    recorded = read_baseline_final(study)
    if recorded is None or set(recorded) != set(final_keys):
        recorded = {k: m.to_dict() for k, m in bench.evaluate(bench.original, final_names).items()}
        write_baseline_final(study, recorded)
    baseline = {k: float(v["value"]) for k, v in recorded.items()}
    ok = _measured_trials(study)
    directions = _directions(config.objectives)
    front = _pareto_numbers(ok, directions)
    # front first (by first objective), then the rest by distance to the front in normalised objective space
    ordered = sorted((t for t in ok if t.number in front), key=lambda t: t.values[0])
    rest = [t for t in ok if t.number not in front]
    if rest and ordered:
        fv = np.array([t.values for t in ordered])
        scale = np.maximum(np.abs(fv).max(axis=0), 1e-12)
        rest.sort(key=lambda t: float(np.min(np.linalg.norm((fv - np.array(t.values)) / scale, axis=1))))
    if len(ordered) > config.rerank:  # a front larger than the budget: spread evenly over the first objective
        idx = np.unique(np.linspace(0, len(ordered) - 1, config.rerank).round().astype(int))
        chosen = [ordered[i] for i in idx]
    else:
        chosen = (ordered + rest)[: config.rerank]
    finals: dict[int, Mapping[str, Measurement]] = {}
    for t in chosen:
        data = read_final(study, t.number)
        if data is None or set(data) != set(final_keys):
            plan = plan_of(t, space=space, layer_names=layer_names, name="")
            finals[t.number] = bench.evaluate_plan(plan, final_names, layer_fn=layer_fn)
            write_final(study, t.number, {k: m.to_dict() for k, m in finals[t.number].items()})
        else:
            finals[t.number] = {k: Measurement.from_dict(v) for k, v in data.items()}
    df = front_table(study, finals, final_keys)
    if not df.empty:
        fdirs = _directions(final_keys)
        df["pareto"] = pareto_mask(df[final_keys].to_numpy(dtype=float), fdirs)
    return {"front": df, "baseline": baseline}
