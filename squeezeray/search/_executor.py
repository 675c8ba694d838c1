"""Where trial evaluations run: the executor interface the search driver talks to.

The driver owns the Optuna study; an executor only turns plans into
:class:`Evaluation` s. Call order, as :func:`~squeezeray.search.run_search` drives it:

1. ``start(job, bench)`` once, before the first trial (workers are started here);
2. repeatedly: ``submit(number, plan)`` while ``capacity()`` is positive, then
   ``wait()``, which blocks until at least one evaluation finished (it may return
   an empty list when only the set of workers changed) and hands back
   ``(trial number, Evaluation)`` pairs, each trial exactly once;
3. ``close()`` once, also after an error.

``progress()`` may be called between ``wait()`` calls for the progress display.
:class:`InProcessExecutor` runs one evaluation at a time in the driver's process
(the default); :class:`~squeezeray.search._ray.RayExecutor` runs them on Ray actors.
"""

from __future__ import annotations

import abc
import dataclasses
import time
import traceback
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from squeezeray._errors import PlanError
from squeezeray.objectives import Measurement
from squeezeray.search._result import TrialOutcome
from squeezeray.spaces import NONE
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import SearchSpace
from squeezeray.workbench import DataConfig

if TYPE_CHECKING:
    from squeezeray.data import TokenData
    from squeezeray.search._cache import CacheStats
    from squeezeray.search._sensitivity import SensitivityRow
    from squeezeray.spaces import Unit
    from squeezeray.workbench import Workbench

EvaluateFn = Callable[[CompressionPlan], dict[str, Measurement]]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What evaluating one plan produced, wherever it ran.

    Attributes:
        outcome: ok (``measurements`` filled), infeasible (PlanError) or failed (crash, or the
            workers running it died more often than allowed).
        measurements: Objective name -> Measurement (empty unless ok).
        error: Why it is infeasible or failed.
        traceback: The tail of the traceback of a crash.
        wall_s: Seconds the evaluation itself took (on the worker).
        cache_hits, cache_misses: Compressed-layer cache use in this evaluation.
        worker: Which worker ran it (empty in-process).
        retries: One line per earlier attempt lost with its worker (why it was lost).
    """

    outcome: TrialOutcome
    measurements: Mapping[str, Measurement] = dataclasses.field(default_factory=dict)
    error: str = ""
    traceback: str = ""
    wall_s: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    worker: str = ""
    retries: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class EvalJob:
    """What every worker of a search needs to know, fixed for the whole search.

    Attributes:
        objectives: Search-stage objective names measured per trial.
        space: The space searched (after the expert rules); tells whether Hessians are needed.
        model_ref: The driver's model reference (workers load the same).
        data: The driver's calibration / evaluation sizes.
        model_fingerprint: Content hash of the driver's model; workers must match it.
        calibration_digest: Digest of the driver's calibration tokens; workers must match it.
        cache_dir: The search's compressed-layer directory (absolute).
        hardware: The hardware profile objectives that take one are given.
        dtype: The dtype the driver's weights are held in (workers load the same).
        device: ``--device`` as given (``auto``, ``cpu``, ``cuda[:N]``); each worker resolves it on its own node.
        offload: Workers keep the decoder blocks on the host too (:mod:`squeezeray._offload`).
    """

    objectives: tuple[str, ...]
    space: SearchSpace
    model_ref: str | None
    data: DataConfig
    model_fingerprint: str
    calibration_digest: str
    cache_dir: Path
    hardware: str = "host"
    dtype: str = "auto"
    device: str = "auto"
    offload: bool = False


def space_needs_hessian(space: SearchSpace) -> bool:
    """Whether any option of ``space`` runs a technique that needs the calibration Hessian."""
    from squeezeray.spaces import parse_step
    from squeezeray.techniques import TECHNIQUES

    labels = {lbl for g in space.groups for lbl in (*g.quantize, *g.prune, *g.lowrank) if lbl != NONE}
    return any(TECHNIQUES.get(parse_step(lbl).technique).needs_hessian for lbl in labels)


def evaluate_plan(
    evaluate_fn: EvaluateFn, plan: CompressionPlan, cache_stats: CacheStats | None = None, *, worker: str = ""
) -> Evaluation:
    """Run ``evaluate_fn(plan)`` and record what happened: a PlanError is infeasible, any other error failed."""
    t0 = time.perf_counter()
    hits0 = cache_stats.hits if cache_stats is not None else 0
    misses0 = cache_stats.misses if cache_stats is not None else 0

    def counts() -> dict[str, int]:
        if cache_stats is None:
            return {"cache_hits": 0, "cache_misses": 0}
        return {"cache_hits": cache_stats.hits - hits0, "cache_misses": cache_stats.misses - misses0}

    try:
        meas = evaluate_fn(plan)
    except PlanError as err:
        return Evaluation(TrialOutcome.INFEASIBLE, error=str(err), wall_s=time.perf_counter() - t0, worker=worker,
                          **counts())
    except Exception as err:  # noqa: BLE001 - a crashing trial is recorded, the study goes on
        return Evaluation(
            TrialOutcome.FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:],
            wall_s=time.perf_counter() - t0, worker=worker, **counts(),
        )
    return Evaluation(TrialOutcome.OK, measurements=dict(meas), wall_s=time.perf_counter() - t0, worker=worker,
                      **counts())


class BaseExecutor(abc.ABC):
    """Runs trial evaluations for the search driver; see the module docstring for the call order."""

    def start(self, job: EvalJob, bench: Workbench) -> None:  # noqa: B027 - optional hook
        """Prepare to evaluate ``job`` 's trials; ``bench`` is the driver's workbench."""

    @abc.abstractmethod
    def capacity(self) -> int:
        """How many more plans ``submit`` accepts now (0: call ``wait`` first)."""

    @abc.abstractmethod
    def submit(self, number: int, plan: CompressionPlan) -> None:
        """Queue the evaluation of trial ``number`` 's plan."""

    @abc.abstractmethod
    def wait(self) -> list[tuple[int, Evaluation]]:
        """Block until evaluations finish; each submitted trial comes back exactly once."""

    def progress(self) -> dict[str, str]:
        """Extra fields for the progress display (throughput, utilisation)."""
        return {}

    def measure_sensitivity(  # noqa: B027 - optional hook
        self, units: Sequence[Unit], proxy: TokenData, hessian: bool,
        on_unit: Callable[[str, list[SensitivityRow]], None],
    ) -> bool:
        """Measure the sensitivity rows of ``units`` on this executor's workers (after ``start``).

        Calls ``on_unit(unit_key, rows)`` for each unit as its rows arrive. Returns False when the executor
        has no workers of its own (the driver then measures in its process), True once every unit is done.
        """
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers; called once, also after an error."""


class InProcessExecutor(BaseExecutor):
    """Evaluates one plan at a time in the driver's process (asks and tells stay strictly sequential)."""

    def __init__(self, evaluate_fn: EvaluateFn, cache_stats: CacheStats | None = None) -> None:
        self.evaluate_fn = evaluate_fn
        self.cache_stats = cache_stats
        self._done: list[tuple[int, Evaluation]] = []
        self._t0 = time.perf_counter()
        self._n = 0

    def capacity(self) -> int:
        return 0 if self._done else 1

    def submit(self, number: int, plan: CompressionPlan) -> None:
        self._done.append((number, evaluate_plan(self.evaluate_fn, plan, self.cache_stats)))

    def wait(self) -> list[tuple[int, Evaluation]]:
        done, self._done = self._done, []
        self._n += len(done)
        return done

    def progress(self) -> dict[str, str]:
        hours = (time.perf_counter() - self._t0) / 3600
        return {"trials/h": f"{self._n / hours:.0f}"} if self._n and hours > 0 else {}
