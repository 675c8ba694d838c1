"""Trial evaluations on a Ray cluster: one actor per worker, each holding the model.

The driver keeps the Optuna study (see :mod:`squeezeray.search._driver`); this
executor only evaluates plans. Design decisions:

* **One actor per worker**, started once per search. It loads the model through a
  picklable factory (default ``Workbench.load(model_ref, data)``; tests pass a
  builder of the tiny model), checks that its fingerprint and calibration digest
  equal the driver's, and keeps a compressed-layer cache for the whole sweep.
* **Calibration statistics are computed once**, by the driver (which needs them
  for the final re-measurement anyway), put in the object store and adopted by
  every worker, the Hessian included when the space has a technique needing it.
* **Compressed layers are computed once per sweep.** A broker actor hands out a
  claim per layer key: the first worker to miss a layer computes it, publishes it
  in the object store (the broker, on the head node, puts it there, so the copy
  outlives that worker and its node) and, with
  ``disk_cache``, writes it to ``<workdir>/cache`` as well; a worker missing the
  same layer meanwhile waits for that copy instead of computing its own.
* **Faults.** A worker whose actor dies (its node removed, the process killed, out
  of memory) is replaced, up to ``max_worker_restarts`` times in a sweep; the trial
  it was running is queued again, first in line for the next free worker, up to
  ``max_retries`` times, then handed back as failed with every loss recorded. A
  Python exception inside an evaluation is not retried: it is the trial's result.
  A busy worker whose node is no longer listed alive is lost too, even where Ray
  never fails its task (checked every ``NODE_CHECK_S`` seconds while the driver waits).
* **Throughput.** The driver asks one trial per worker plus ``prefetch`` more, so
  a worker starts its next trial as soon as it hands back the last, while the driver
  tells the study; ``progress()`` reports trials per hour and worker utilisation
  (busy seconds / seconds alive since ready).

Ray is imported only when an executor starts, so ``squeezeray.search`` works
without the ``cluster`` extra installed.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray.compress import StatsStore
from squeezeray.search._executor import BaseExecutor
from squeezeray.search._executor import EvalJob
from squeezeray.search._executor import Evaluation
from squeezeray.search._executor import space_needs_hessian
from squeezeray.search._ray_config import ExecutorStats
from squeezeray.search._ray_config import RayConfig
from squeezeray.search._ray_config import WorkerStats
from squeezeray.search._ray_config import _PASSED_ENV
from squeezeray.search._ray_pool import NODE_CHECK_S
from squeezeray.search._ray_pool import _Pending
from squeezeray.search._ray_pool import _Worker
from squeezeray.search._ray_pool import _one_line
from squeezeray.search._ray_pool import node_gone
from squeezeray.search._ray_pool import on_dead_nodes
from squeezeray.search._ray_config import log
from squeezeray.search._ray_workers import BenchFactory
from squeezeray.search._ray_workers import WorkerEvaluateFn
from squeezeray.search._ray_workers import _LayerBroker
from squeezeray.search._ray_workers import _TrialWorker
from squeezeray.search._ray_workers import default_worker_evaluate
from squeezeray.search._result import TrialOutcome
from squeezeray.spaces import CompressionPlan
from squeezeray.workbench import Workbench

if TYPE_CHECKING:
    from squeezeray.data import TokenData
    from squeezeray.search._sensitivity import SensitivityRow
    from squeezeray.spaces import Unit


_HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has it


class RayExecutor(BaseExecutor):
    """Evaluates trials on Ray worker actors; see the module docstring.

    Args:
        config: Cluster address, worker count and per-trial resources.
        bench_factory: Picklable zero-argument callable building the worker's Workbench
            (default: ``Workbench.load(model_ref, data)`` of the driver's job).
        evaluate: Picklable ``(bench, layer_fn, plan, objectives) -> measurements`` run on the
            workers instead of the default (tests inject slow or crashing evaluations).
        runtime_env: Extra Ray runtime environment for the workers (``env_vars`` are merged
            with the ones the executor sets: RAY_AUTH_MODE, TOKENIZERS_PARALLELISM, TQDM_DISABLE, HF_*).
    """

    def __init__(
        self, config: RayConfig | None = None, *, bench_factory: BenchFactory | None = None,
        evaluate: WorkerEvaluateFn | None = None, runtime_env: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config or RayConfig()
        self.bench_factory = bench_factory
        self.evaluate_fn = evaluate or default_worker_evaluate
        self.runtime_env = dict(runtime_env or {})
        self._workers: list[_Worker] = []
        self._broker: Any = None
        self._queue: collections.deque[_Pending] = collections.deque()
        self._owns_ray = False
        self._started = False
        self._closed = False
        self._restarts = 0
        self._retried = 0
        self._done = 0
        self._overhead: list[float] = []
        self._t_start: float | None = None
        self._t_ready: float | None = None
        self._t_last: float | None = None
        self.worker_infos: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, job: EvalJob, bench: Workbench) -> None:
        import ray

        if self._started:
            raise SqueezerayError("a RayExecutor runs one search; make a new one for the next")
        self._started = True
        self._t_start = time.perf_counter()
        cfg = self.config
        mode = cfg.resolved_auth_mode()
        os.environ["RAY_AUTH_MODE"] = mode.value  # before ray.init: Ray reads it from the environment
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray gives a starting GCS 30 s to bind its port; a loaded 2-core machine can take longer
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
        env_vars = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env_vars.update(dict(self.runtime_env.get("env_vars", {})))
        # workers show no progress bars (model loading would print one per worker through Ray's log relay)
        env_vars.update({"RAY_AUTH_MODE": mode.value, "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"})
        self._env = {**self.runtime_env, "env_vars": env_vars}
        if not ray.is_initialized():
            if cfg.address == "local":
                ray.init(num_cpus=cfg.local_cpus, object_store_memory=cfg.local_object_store_bytes,
                         include_dashboard=False, logging_level=logging.WARNING, runtime_env=self._env)
            else:
                ray.init(address=cfg.address, logging_level=logging.WARNING, runtime_env=self._env)
            self._owns_ray = True
        resources = ray.cluster_resources()
        auto_gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        self._gpus = cfg.gpus_per_trial if cfg.gpus_per_trial is not None else auto_gpus
        self._n = cfg.workers if cfg.workers is not None else self._fit(resources)
        self._max_restarts = cfg.max_worker_restarts if cfg.max_worker_restarts is not None else 2 * self._n
        if job.device.startswith("cuda") and not self._gpus:
            raise SqueezerayError(f"device={job.device!r}: workers reserve no GPU, Ray hides GPUs from them (pass --gpus-per-trial 1)")
        hessian = space_needs_hessian(job.space)
        self._job = dataclasses.replace(job, hardware=_portable_ref(job.hardware) or job.hardware)
        self._hessian = hessian
        stats = bench.stats(hessian=hessian)  # computed once, by the driver; sent whole (nodes may share no disk)
        self._stats_ref = ray.put(stats.as_dict() if isinstance(stats, StatsStore) else dict(stats))
        self._factory = self.bench_factory or functools.partial(
            Workbench.load, _portable_ref(job.model_ref), job.data, dtype=job.dtype, device=job.device, offload=job.offload)
        # on the head node: it lives as long as the cluster, whichever worker nodes come and go
        self._broker = ray.remote(_LayerBroker).options(
            num_cpus=0, resources={_HEAD_RESOURCE: 0.001}, max_restarts=0, runtime_env=self._env,
        ).remote()
        self._worker_cls = ray.remote(_TrialWorker)
        for _ in range(self._n):
            self._spawn()

    def _fit(self, resources: Mapping[str, float]) -> int:
        n = int(resources.get("CPU", 0) // self.config.cpus_per_trial)
        if self._gpus:
            n = min(n, int(resources.get("GPU", 0) // self._gpus))
        if n < 1:
            raise SqueezerayError(
                f"the cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) cannot fit one "
                f"worker of cpus_per_trial={self.config.cpus_per_trial:g}, gpus_per_trial={self._gpus:g}; lower them "
                "or pass workers=N (an autoscaling cluster then grows)"
            )
        return n

    def _spawn(self) -> None:
        cfg = self.config
        label = f"w{len(self._workers)}"
        opts: dict[str, Any] = {
            "num_cpus": cfg.cpus_per_trial, "num_gpus": self._gpus, "max_restarts": 0, "max_task_retries": 0,
            "runtime_env": self._env,
        }
        if cfg.memory_per_trial is not None:
            opts["memory"] = cfg.memory_per_trial
        handle = self._worker_cls.options(**opts).remote(
            label, self._job, self._factory, self._stats_ref, self._hessian, self._broker, self.evaluate_fn,
            max(1, int(cfg.cpus_per_trial)), cfg.disk_cache,
        )
        self._workers.append(_Worker(label, handle, handle.ready.remote(), name=label, started=time.perf_counter()))

    def close(self) -> None:
        import ray

        if self._closed or not self._started:
            return
        self._closed = True
        if not ray.is_initialized():  # start() failed before connecting
            return
        for w in self._workers:
            if w.alive and w.ready_at is not None and w.running is None:  # a busy worker would answer late
                try:
                    self.worker_infos.append(ray.get(w.handle.info.remote(), timeout=30))
                except ray.exceptions.RayError as err:
                    log.warning("worker %s gave no summary: %s", w.name, err)
        now = time.perf_counter()
        for w in self._workers:
            if w.alive:
                w.dead_at = now
                w.death = "closed"
            ray.kill(w.handle, no_restart=True)
        if self._broker is not None:
            ray.kill(self._broker, no_restart=True)
        if self._owns_ray:
            ray.shutdown()

    # ------------------------------------------------------------------ trials
    def capacity(self) -> int:
        live = sum(1 for w in self._workers if w.alive)
        busy = sum(1 for w in self._workers if w.running is not None) + len(self._queue)
        return max(0, live + self.config.prefetch - busy) if live else 0

    def submit(self, number: int, plan: CompressionPlan) -> None:
        self._queue.append(_Pending(number, plan.to_dict()))
        self._dispatch()

    def _dispatch(self) -> None:
        for w in self._workers:
            if not self._queue:
                return
            if w.alive and w.ready_at is not None and w.running is None:
                w.running = self._queue.popleft()
                w.ref = w.handle.evaluate.remote(w.running.plan)
                w.dispatched_at = time.perf_counter()

    def wait(self) -> list[tuple[int, Evaluation]]:
        import ray

        results: list[tuple[int, Evaluation]] = []
        while not results:
            self._dispatch()
            pending: dict[Any, tuple[str, _Worker]] = {}
            for w in self._workers:
                if w.alive and w.ref is not None:
                    pending[w.ref] = ("eval", w)
                elif w.alive and w.ready_at is None and w.ready_ref is not None:
                    pending[w.ready_ref] = ("ready", w)
            if not pending:
                raise SqueezerayError(
                    f"no worker left to run {len(self._queue)} queued trial(s): {self._restarts} of "
                    f"max_worker_restarts={self._max_restarts} replacements used; last death: {self._last_death()}"
                )
            only_starting = all(kind == "ready" for kind, _ in pending.values())
            timeout = self.config.start_timeout_s if only_starting else NODE_CHECK_S
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not ready and not only_starting:
                for w in self._on_dead_nodes():  # Ray may never fail a task whose node was removed
                    results.extend(self._trial_lost(w, w.running, node_gone(w)))  # type: ignore[arg-type]
                continue
            if not ready:
                cores = ray.cluster_resources()
                raise SqueezerayError(
                    f"no worker became ready within start_timeout_s={self.config.start_timeout_s:g}: each needs "
                    f"{self.config.cpus_per_trial:g} CPU, {self._gpus:g} GPU; the cluster has {dict(cores)}"
                )
            rest = [r for r in pending if r not in ready]
            if rest:  # everything else that is already finished, handled in the same round
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                kind, w = pending[ref]
                if kind == "ready":
                    self._on_ready(w)
                else:
                    results.extend(self._on_result(w))
            self._dispatch()  # queued trials start now, while the driver tells these results
        self._t_last = time.perf_counter()
        self._done += len(results)
        return results

    # ------------------------------------------------------------------ sensitivity
    def measure_sensitivity(
        self, units: Sequence[Unit], proxy: TokenData, hessian: bool,
        on_unit: Callable[[str, list[SensitivityRow]], None],
    ) -> bool:
        """One unit per task, to whichever worker is free; a unit whose worker is lost goes to another
        (up to ``max_retries`` times); an exception inside a measurement stops the search (it would be
        the same on every worker)."""
        import ray

        from squeezeray.search._sensitivity import SensitivityRow

        queue = collections.deque((u, 0) for u in units)
        busy: dict[Any, tuple[_Worker, Unit, int]] = {}
        proxy_ref = ray.put(proxy)
        while queue or busy:
            taken = {id(w) for w, _, _ in busy.values()}
            for w in self._workers:
                if queue and w.alive and w.ready_at is not None and id(w) not in taken:
                    unit, tries = queue.popleft()
                    busy[w.handle.sensitivity.remote([unit], proxy_ref, hessian)] = (w, unit, tries)
                    taken.add(id(w))
            starting = {w.ready_ref: w for w in self._workers
                        if w.alive and w.ready_at is None and w.ready_ref is not None}
            if not busy and not starting:
                raise SqueezerayError(
                    f"no worker left to measure {len(queue)} unit(s)' sensitivity: {self._restarts} of "
                    f"max_worker_restarts={self._max_restarts} replacements used; last death: {self._last_death()}")
            timeout = NODE_CHECK_S if busy else self.config.start_timeout_s
            ready, _ = ray.wait([*busy, *starting], num_returns=1, timeout=timeout)
            if not ready and busy:
                gone = {id(w) for w in self._on_dead_nodes(busy=[w for w, _, _ in busy.values()])}
                for ref in [r for r, (w, _, _) in busy.items() if id(w) in gone]:
                    w, unit, tries = busy.pop(ref)
                    queue.appendleft(self._unit_lost(w, unit, tries, node_gone(w)))
                continue
            if not ready:
                raise SqueezerayError(
                    f"no worker became ready within start_timeout_s={self.config.start_timeout_s:g} "
                    "to measure the sensitivity")
            ref = ready[0]
            if ref in starting:
                self._on_ready(starting[ref])
                continue
            w, unit, tries = busy.pop(ref)
            try:
                rows = ray.get(ref)
            except ray.exceptions.RayTaskError as err:
                raise SqueezerayError(f"sensitivity of unit {unit.key!r} failed on {w.name}: {err}") from None
            except ray.exceptions.RayError as err:
                queue.appendleft(self._unit_lost(w, unit, tries, err))
                continue
            on_unit(unit.key, [SensitivityRow.from_dict(r) for r in rows])
        return True

    def _unit_lost(self, w: _Worker, unit: Unit, tries: int, err: Exception) -> tuple[Unit, int]:
        """``w`` was lost measuring ``unit``: the unit to queue again, or the search stops past ``max_retries``."""
        self._lost(w, err)
        if tries + 1 > self.config.max_retries:
            raise SqueezerayError(f"sensitivity of unit {unit.key!r}: worker lost {tries + 1} times "
                                  f"(max_retries={self.config.max_retries}); last: {_one_line(err)}") from None
        self._retried += 1  # counted with the trials' retries (ExecutorStats.retried)
        return unit, tries + 1

    def _on_ready(self, w: _Worker) -> None:
        import ray

        try:
            info = ray.get(w.ready_ref)
        except ray.exceptions.RayError as err:
            self._lost(w, err)
            return
        if info["error"]:
            raise SqueezerayError(f"worker {info['name']} could not start: {info['error']}")
        w.name, w.node_ip, w.ready_at = info["name"], info["node_ip"], time.perf_counter()
        if self._t_ready is None:
            self._t_ready = w.ready_at
        log.info("worker %s ready in %.1f s (pid %s, %d threads)", w.name, info["start_s"], info["pid"], info["threads"])

    def _on_dead_nodes(self, busy: list[_Worker] | None = None) -> list[_Worker]:
        """The busy workers (those running a trial, or ``busy``) whose node the cluster no longer lists as alive."""
        import ray

        workers = busy if busy is not None else [w for w in self._workers if w.ref is not None]
        return on_dead_nodes(workers, ray.nodes())

    def _on_result(self, w: _Worker) -> list[tuple[int, Evaluation]]:
        import ray

        job, ref = w.running, w.ref
        assert job is not None
        w.running, w.ref = None, None
        try:
            ev: Evaluation = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # raised past evaluate_plan (e.g. a result that cannot travel)
            return [(job.number, Evaluation(TrialOutcome.FAILED, error=f"{type(err).__name__}: {err}"[:2000],
                                            worker=w.name, retries=job.retries))]
        except ray.exceptions.RayError as err:
            return self._trial_lost(w, job, err)
        w.trials += 1
        w.busy_s += ev.wall_s
        self._overhead.append(max(0.0, time.perf_counter() - w.dispatched_at - ev.wall_s))
        return [(job.number, dataclasses.replace(ev, retries=job.retries))]

    def _trial_lost(self, w: _Worker, job: _Pending, err: Exception) -> list[tuple[int, Evaluation]]:
        """``w`` was lost running ``job``: queued again (nothing to tell yet), or failed past ``max_retries``."""
        w.running, w.ref = None, None
        self._lost(w, err)
        retries = (*job.retries, f"{w.name}: {_one_line(err)}")
        if len(retries) > self.config.max_retries:
            error = f"worker lost {len(retries)} times (max_retries={self.config.max_retries}); last: {retries[-1]}"
            return [(job.number, Evaluation(TrialOutcome.FAILED, error=error, worker=w.name, retries=retries))]
        self._retried += 1
        self._queue.appendleft(_Pending(job.number, job.plan, retries))
        return []

    def _lost(self, w: _Worker, err: Exception) -> None:
        import ray

        w.dead_at = time.perf_counter()
        w.death = _one_line(err)
        log.warning("worker %s lost: %s", w.name, w.death)
        ray.kill(w.handle, no_restart=True)
        self._broker.release_worker.remote(w.name)
        if self._restarts < self._max_restarts:
            self._restarts += 1
            self._spawn()

    def _last_death(self) -> str:
        dead = [w for w in self._workers if w.death]
        return f"{dead[-1].name}: {dead[-1].death}" if dead else "none"

    # ------------------------------------------------------------------ reporting
    def stats(self) -> ExecutorStats:
        now = time.perf_counter()
        workers = tuple(
            WorkerStats(
                name=w.name, node_ip=w.node_ip,
                state="dead" if not w.alive and w.death != "closed" else ("ready" if w.ready_at is not None else "starting"),
                trials=w.trials, busy_s=w.busy_s,
                alive_s=((w.dead_at or now) - w.ready_at) if w.ready_at is not None else 0.0, death=w.death,
            )
            for w in self._workers
        )
        alive = sum(x.alive_s for x in workers)
        elapsed = ((self._t_last or now) - self._t_ready) if self._t_ready is not None else 0.0
        startup = (self._t_ready - self._t_start) if self._t_ready is not None and self._t_start is not None else 0.0
        return ExecutorStats(
            trials=self._done, startup_s=startup, elapsed_s=elapsed,
            trials_per_hour=self._done / elapsed * 3600 if elapsed > 0 else 0.0,
            utilisation=sum(x.busy_s for x in workers) / alive if alive > 0 else 0.0,
            overhead_s=sum(self._overhead) / len(self._overhead) if self._overhead else 0.0,
            retried=self._retried, restarts=self._restarts, workers=workers,
        )

    def progress(self) -> dict[str, str]:
        s = self.stats()
        ready = sum(1 for w in self._workers if w.alive and w.ready_at is not None)
        return {"trials/h": f"{s.trials_per_hour:.0f}", "util": f"{s.utilisation:.0%}", "workers": f"{ready}/{self._n}"}


def _portable_ref(ref: str | None) -> str | None:
    """A model reference workers resolve the same way: local paths made absolute (their cwd differs)."""
    if ref is not None and Path(ref).expanduser().exists():
        return str(Path(ref).expanduser().resolve())
    return ref
