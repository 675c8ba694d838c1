"""``squeezeray.search(...)``: the Python entry point of a search."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from squeezeray._errors import SqueezerayError
from squeezeray.data import DataConfig
from squeezeray.data import SourcesLike
from squeezeray.objectives import is_objective
from squeezeray.objectives import objective_class
from squeezeray.search._config import SearchConfig
from squeezeray.search._driver import SearchResult
from squeezeray.search._driver import run_search
from squeezeray.search._executor import BaseExecutor
from squeezeray.search._select import Constraints
from squeezeray.search._select import Selection
from squeezeray.search._select import select
from squeezeray.spaces import SearchSpace
from squeezeray.workbench import Workbench

DEFAULT_WEIGHTS = {"size": 1.0, "perplexity": 1.0, "latency": 0.5}


def select_front(
    front: pd.DataFrame, baseline: Mapping[str, float], constraints: Mapping[str, float] | None,
    weights: Mapping[str, float] | None,
) -> Selection:
    """The selector's pick among the re-measured trials of ``front`` (a search's or a study record's).

    Args:
        front: The front table (``trial``, the final objectives, other columns ignored).
        baseline: The original's final-objective values.
        constraints: :class:`~squeezeray.search.Constraints` fields (None: none).
        weights: Objective weights (None: :data:`DEFAULT_WEIGHTS` of the objectives the front has).
    """
    if front.empty:
        raise SqueezerayError("no trial finished successfully; nothing to select")
    names = [c for c in front.columns if is_objective(c)]
    directions = {n: objective_class(n).direction for n in names}
    w = dict(weights) if weights is not None else {k: v for k, v in DEFAULT_WEIGHTS.items() if k in names}
    return select(
        front, baseline=baseline, directions=directions, constraints=Constraints(**dict(constraints or {})), weights=w,
    )


def select_from(result: SearchResult, constraints: Mapping[str, float] | None, weights: Mapping[str, float] | None) -> SearchResult:
    """Fill ``result.selected`` / ``selection_reason`` with the selector's pick among the re-measured trials."""
    sel = select_front(result.front, result.baseline, constraints, weights)
    result.selected = int(sel.trial)
    result.selection_reason = sel.reason
    return result


def search(
    model: str | None = None,
    *,
    hardware: str = "host",
    objectives: Sequence[str] = ("size", "kl"),
    final_objectives: Sequence[str] = ("size", "perplexity", "kl", "latency"),
    space: str | SearchSpace = "weights-int",
    n_trials: int = 40,
    sampler: str = "nsga2",
    seed: int = 0,
    constraints: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
    data: DataConfig | None = None,
    calib_data: SourcesLike | None = None,
    proxy_data: SourcesLike | None = None,
    eval_data: SourcesLike | None = None,
    workdir: str | Path = "runs",
    study_name: str | None = None,
    storage: str | None = None,
    resume: bool | str = False,
    allow: Sequence[str] = (),
    bench: Workbench | None = None,
    progress: bool = True,
    executor: BaseExecutor | None = None,
    **extra: Any,
) -> SearchResult:
    """Search per-layer compression plans for ``model`` and select one.

    Args:
        model: Model reference (None: the embedded SmolLM2-135M).
        hardware: Hardware profile (``host`` measures this machine).
        objectives: What the sampler optimises on every trial (cheap proxies).
        final_objectives: What trials on or near the front are re-measured on.
        space: ``weights-int``, ``prune+quant``, ``full``, a YAML file or a SearchSpace.
        n_trials: Trials to finish, uniform baselines included.
        sampler: ``nsga2`` (default), ``tpe``, ``random`` or ``gp``.
        seed: Sampler seed.
        constraints: Selection constraints (``max_accuracy_drop``, ``max_latency_ms``,
            ``max_size_bytes``, ``max_energy_j``); ``max_size_bytes`` and ``max_kl`` are
            also told to the sampler.
        weights: Objective weights for the selection (default size 1, perplexity 1, latency 0.5).
        data: Calibration / evaluation sources and sizes.
        calib_data, proxy_data, eval_data: Sources replacing ``data``'s (a path, ``path:field=NAME``, a
            :class:`~squeezeray.data.DataSource`, or a list of them for a weighted mixture).
        workdir: Folder for the study database, layer cache and reports.
        study_name, storage: Study name and RDB URL (default SQLite in ``workdir``).
        resume: Continue an existing study (trials in flight when it stopped are re-run); "auto":
            continue it if it exists, else start it.
        allow: Expert rules to lift by name.
        bench: An already loaded workbench (skips loading ``model``).
        progress: Show a progress bar.
        executor: Where trials are evaluated (default in-process), e.g.
            ``RayExecutor(RayConfig(address="auto", workers=8))``.
        **extra: Further :class:`SearchConfig` fields (``rerank``, ``baselines``).

    Returns:
        A :class:`SearchResult` with ``front`` (DataFrame), ``selected`` and ``plan()``.
    """
    cons = dict(constraints or {})
    sources = {k: v for k, v in (("calib_data", calib_data), ("proxy_data", proxy_data), ("eval_data", eval_data))
               if v is not None}
    data = dataclasses.replace(data or DataConfig(), **sources)
    cfg = SearchConfig(
        model=model, hardware=hardware, space=space, objectives=tuple(objectives),
        final_objectives=tuple(final_objectives), n_trials=n_trials, sampler=sampler, seed=seed,
        max_size_bytes=cons.get("max_size_bytes"), max_kl=cons.pop("max_kl", None), data=data,
        workdir=Path(workdir), study_name=study_name, storage=storage, allow=tuple(allow), **extra,
    )
    result = run_search(cfg, bench=bench, resume=resume, progress=progress, executor=executor)
    return select_from(result, cons, weights)


__all__ = ["SearchConfig", "SearchResult", "search", "select_front", "select_from"]
