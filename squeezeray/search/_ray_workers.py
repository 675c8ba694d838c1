"""The Ray actors of a sweep: the layer broker (each compressed layer computed by one worker) with the
workers' shared layer cache, and the trial worker that holds the model and evaluates plans."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from squeezeray._errors import SqueezerayError
from squeezeray.compress import CompressedLinear
from squeezeray.objectives import Measurement
from squeezeray.search._cache import DEFAULT_MEMORY_BYTES
from squeezeray.search._cache import LayerCache
from squeezeray.search._executor import EvalJob
from squeezeray.search._executor import Evaluation
from squeezeray.search._executor import evaluate_plan
from squeezeray.spaces import CompressionPlan
from squeezeray.workbench import Workbench


LayerFn = Callable[..., CompressedLinear]


WorkerEvaluateFn = Callable[[Workbench, LayerFn, CompressionPlan, Sequence[str]], dict[str, Measurement]]


BenchFactory = Callable[[], Workbench]


class _LayerBroker:
    """Who computes which compressed layer; finished layers as object-store references (async actor).

    ``claim`` answers ``("ready", [ref])`` for a published layer, ``("compute", None)`` to the
    first claimant (who must ``publish`` or ``abandon``), and makes later claimants wait.
    """

    def __init__(self) -> None:
        self._ready: dict[str, list[Any]] = {}
        self._claims: dict[str, tuple[str, Any]] = {}  # key -> (worker, asyncio.Event)
        self.published = 0

    async def claim(self, key: str, worker: str) -> tuple[str, list[Any] | None]:
        import asyncio

        while True:
            if key in self._ready:
                return "ready", self._ready[key]
            held = self._claims.get(key)
            if held is None:
                self._claims[key] = (worker, asyncio.Event())
                return "compute", None
            await held[1].wait()

    def _release(self, key: str) -> None:
        held = self._claims.pop(key, None)
        if held is not None:
            held[1].set()

    async def publish(self, key: str, module: CompressedLinear) -> None:
        import ray

        self._ready[key] = [ray.put(module)]  # owned by the broker: outlives the worker that computed it
        self.published += 1
        self._release(key)

    async def abandon(self, key: str) -> None:
        self._release(key)

    async def forget(self, key: str) -> None:
        self._ready.pop(key, None)

    async def release_worker(self, worker: str) -> int:
        keys = [k for k, (w, _) in self._claims.items() if w == worker]
        for k in keys:
            self._release(k)
        return len(keys)

    async def counts(self) -> dict[str, int]:
        return {"layers": len(self._ready), "published": self.published, "claims": len(self._claims)}


class SharedLayerCache(LayerCache):
    """A :class:`LayerCache` whose misses go through the broker: each layer is computed by one worker.

    Args:
        directory: Shared layer directory (None: memory + object store only).
        broker: Handle of the search's :class:`_LayerBroker` actor.
        worker: This worker's name (claims are released if it dies).
    """

    def __init__(self, directory: str | Path | None, *, broker: Any, worker: str, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        super().__init__(directory, max_memory_bytes=max_memory_bytes)
        self.broker = broker
        self.worker = worker

    def _entry(self, key: str, compute: Callable[[], CompressedLinear]) -> CompressedLinear:
        import ray

        module = self.get(key)  # memory, then the shared directory
        if module is not None:
            return module
        while True:
            state, refs = ray.get(self.broker.claim.remote(key, self.worker))
            if state == "ready":
                assert refs is not None
                try:
                    module = ray.get(refs[0])
                except ray.exceptions.RayError:  # its copy was lost with its node: compute it again
                    ray.get(self.broker.forget.remote(key))
                    continue
                self.stats.shared_hits += 1
                self._remember(key, module)
                return module
            t0 = time.perf_counter()
            try:
                module = compute()
            except BaseException:
                ray.get(self.broker.abandon.remote(key))
                raise
            self.stats.compute_seconds += time.perf_counter() - t0
            self.stats.misses += 1
            self.put(key, module)
            ray.get(self.broker.publish.remote(key, module))
            return module


def default_worker_evaluate(
    bench: Workbench, layer_fn: LayerFn, plan: CompressionPlan, objectives: Sequence[str]
) -> dict[str, Measurement]:
    """Compress ``plan`` through the worker's layer cache and measure the search objectives."""
    return bench.evaluate_plan(plan, list(objectives), layer_fn=layer_fn)


class _TrialWorker:
    """Holds one workbench (model, calibration data and statistics) and evaluates plans on it.

    Construction never raises: a startup error is reported by :meth:`ready`, so the driver
    can tell a misconfiguration (same on every worker: stop) from a lost process (replace).
    """

    def __init__(
        self, label: str, job: EvalJob, factory: BenchFactory, stats: Mapping[str, Any] | None, hessian: bool,
        broker: Any, evaluate: WorkerEvaluateFn, threads: int, disk_cache: bool,
    ) -> None:
        import traceback

        import ray

        self.node_ip = ray.util.get_node_ip_address()
        self.name = f"{label}@{self.node_ip}"
        self.objectives = tuple(job.objectives)
        self.evaluate_fn = evaluate
        self.trials = 0
        self.sensitivity_units = 0
        self.busy_s = 0.0
        self.error = ""
        t0 = time.perf_counter()
        try:
            torch.set_num_threads(threads)
            self.bench = factory()
            fingerprint = self.bench.loaded.fingerprint()
            if fingerprint != job.model_fingerprint:
                raise SqueezerayError(
                    f"model fingerprint {fingerprint[:12]} differs from the driver's {job.model_fingerprint[:12]} "
                    f"(model {job.model_ref!r} is not the same file on node {self.node_ip})"
                )
            if self.bench.calibration.digest != job.calibration_digest:
                raise SqueezerayError(f"calibration data differs from the driver's on node {self.node_ip}")
            self.bench.hardware = job.hardware
            if stats is not None:
                self.bench.adopt_stats(stats, hessian=hessian)
            self.cache = SharedLayerCache(job.cache_dir if disk_cache else None, broker=broker, worker=self.name)
            self.layer_fn = self.cache.layer_fn(job.model_fingerprint, job.calibration_digest)
        except Exception as err:  # noqa: BLE001 - reported by ready(), the driver stops the sweep
            self.error = f"{type(err).__name__}: {err}\n{traceback.format_exc()[-2000:]}"
        self.start_s = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        import ray

        return {
            "name": self.name, "node_ip": self.node_ip, "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(), "error": self.error, "start_s": self.start_s, "threads": torch.get_num_threads(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        }

    def evaluate(self, plan_dict: dict[str, Any]) -> Evaluation:
        plan = CompressionPlan.from_dict(plan_dict)
        ev = evaluate_plan(
            lambda p: self.evaluate_fn(self.bench, self.layer_fn, p, self.objectives), plan, self.cache.stats,
            worker=self.name,
        )
        self.trials += 1
        self.busy_s += ev.wall_s
        return ev

    def sensitivity(self, units: Sequence[Any], proxy: Any, hessian: bool) -> list[dict[str, Any]]:
        """The sensitivity rows of ``units`` (every option alone) on this worker's model, as dicts."""
        from squeezeray.search._sensitivity import measure_sensitivity

        t0 = time.perf_counter()
        table = measure_sensitivity(self.bench.original, units, self.bench.stats(hessian=hessian), proxy,
                                    layer_fn=self.layer_fn)
        self.busy_s += time.perf_counter() - t0
        self.sensitivity_units += len(units)
        return [r.to_dict() for r in table.rows]

    def info(self) -> dict[str, Any]:
        s = self.cache.stats
        return {
            "name": self.name, "trials": self.trials, "sensitivity_units": self.sensitivity_units,
            "busy_s": self.busy_s, "stats_passes": self.bench.stats_passes,
            "cache": {"memory_hits": s.memory_hits, "disk_hits": s.disk_hits, "shared_hits": s.shared_hits,
                      "misses": s.misses},
        }
