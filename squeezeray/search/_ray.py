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
import enum
import functools
import logging
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
from squeezeray.search._cache import LayerCache
from squeezeray.search._executor import BaseExecutor
from squeezeray.search._executor import EvalJob
from squeezeray.search._executor import Evaluation
from squeezeray.search._executor import evaluate_plan
from squeezeray.search._executor import space_needs_hessian
from squeezeray.search._result import TrialOutcome
from squeezeray.spaces import CompressionPlan
from squeezeray.workbench import Workbench

log = logging.getLogger(__name__)

LayerFn = Callable[..., CompressedLinear]
WorkerEvaluateFn = Callable[[Workbench, LayerFn, CompressionPlan, Sequence[str]], dict[str, Measurement]]
BenchFactory = Callable[[], Workbench]

_HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has it
_PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "TRANSFORMERS_NO_ADVISORY_WARNINGS")


class RayAuthMode(str, enum.Enum):
    """Ray's ``RAY_AUTH_MODE``: it must be the same in every process of a cluster."""

    DISABLED = "disabled"  # no authentication: private clusters on trusted networks (e.g. loopback)
    TOKEN = "token"  # bearer token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """How a search uses Ray, validated once.

    Attributes:
        address: ``local`` (start a private Ray instance on this machine, shut down at the
            end), ``auto`` (the cluster this machine joined with ``ray start``) or ``HOST:PORT``
            of a cluster's head (GCS). Ray Client addresses (``ray://``) are refused: submit the
            search as a Ray job so the driver runs inside the cluster.
        workers: Worker actors (None: as many as the cluster's CPUs, and GPUs when requested, fit).
        cpus_per_trial: CPUs each worker reserves (one trial runs on a worker at a time); also
            its torch thread count.
        gpus_per_trial: GPUs each worker reserves (None: 1 when the cluster has GPUs, else 0).
        memory_per_trial: Bytes of memory each worker reserves (None: no reservation).
        max_retries: Times a trial is re-run after the worker running it died, before it is
            recorded as failed.
        max_worker_restarts: Dead workers replaced in a sweep (None: two per worker).
        disk_cache: Workers also keep compressed layers in ``<workdir>/cache`` (a path every
            node must see, e.g. NFS; False: share them through the object store only).
        start_timeout_s: How long the sweep waits for a worker when none is running.
        prefetch: Trials asked beyond one per worker and queued, so a worker starts its next
            trial while the driver is still telling the study about the last one.
        auth_mode: RAY_AUTH_MODE for the driver and the workers (None: read it from the
            environment, where it must be set).
        local_cpus, local_object_store_bytes: Size of the Ray instance ``local`` starts
            (None: Ray's defaults, all cores and 30% of memory).
    """

    address: str = "local"
    workers: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    memory_per_trial: int | None = None
    max_retries: int = 2
    max_worker_restarts: int | None = None
    disk_cache: bool = True
    start_timeout_s: float = 600.0
    prefetch: int = 1
    auth_mode: RayAuthMode | None = None
    local_cpus: int | None = None
    local_object_store_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise SqueezerayError(f"ray address={self.address!r}: use local, auto or HOST:PORT")
        if self.address.startswith("ray://"):
            raise SqueezerayError(
                f"ray address={self.address!r}: Ray Client is not supported; submit the search as a Ray job "
                "(ray job submit -- squeezeray search --ray auto ...) so the driver runs inside the cluster"
            )
        if self.address not in ("local", "auto") and ":" not in self.address:
            raise SqueezerayError(f"ray address={self.address!r}: use local, auto or HOST:PORT")
        for field in ("workers", "max_worker_restarts", "local_cpus", "local_object_store_bytes", "memory_per_trial"):
            v = getattr(self, field)
            low = 0 if field == "max_worker_restarts" else 1
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                raise SqueezerayError(f"{field}={v!r}: must be an integer >= {low} or None")
        for field in ("max_retries", "prefetch"):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise SqueezerayError(f"{field}={v!r}: must be an integer >= 0")
        if not isinstance(self.cpus_per_trial, (int, float)) or self.cpus_per_trial <= 0:
            raise SqueezerayError(f"cpus_per_trial={self.cpus_per_trial!r}: must be a positive number")
        if self.gpus_per_trial is not None and (
            not isinstance(self.gpus_per_trial, (int, float)) or self.gpus_per_trial < 0
        ):
            raise SqueezerayError(f"gpus_per_trial={self.gpus_per_trial!r}: must be a number >= 0 or None")
        if not isinstance(self.start_timeout_s, (int, float)) or self.start_timeout_s <= 0:
            raise SqueezerayError(f"start_timeout_s={self.start_timeout_s!r}: must be a positive number")
        if self.auth_mode is not None:
            try:
                object.__setattr__(self, "auth_mode", RayAuthMode(self.auth_mode))
            except ValueError:
                raise SqueezerayError(
                    f"auth_mode={self.auth_mode!r}: must be one of {', '.join(m.value for m in RayAuthMode)}"
                ) from None
        if self.address != "local" and (self.local_cpus is not None or self.local_object_store_bytes is not None):
            raise SqueezerayError(f"local_cpus / local_object_store_bytes apply to address='local', not {self.address!r}")

    def resolved_auth_mode(self) -> RayAuthMode:
        """The auth mode to use: the configured one, else RAY_AUTH_MODE from the environment."""
        env = os.environ.get("RAY_AUTH_MODE")
        if self.auth_mode is not None:
            if env is not None and env != self.auth_mode.value:
                raise SqueezerayError(f"auth_mode={self.auth_mode.value!r} but the environment has RAY_AUTH_MODE={env!r}")
            return self.auth_mode
        if env is None:
            raise SqueezerayError(
                "RAY_AUTH_MODE is not set: export RAY_AUTH_MODE=disabled (a private cluster on a trusted network) "
                "or RAY_AUTH_MODE=token (with RAY_AUTH_TOKEN or ~/.ray/auth_token), the same as the cluster's"
            )
        try:
            return RayAuthMode(env)
        except ValueError:
            raise SqueezerayError(
                f"RAY_AUTH_MODE={env!r}: must be one of {', '.join(m.value for m in RayAuthMode)}"
            ) from None


@dataclasses.dataclass(frozen=True)
class WorkerStats:
    """One worker's share of a sweep.

    Attributes:
        name: Worker label (``w<index>@<node ip>``).
        node_ip: The node it ran on (empty if it never started).
        state: starting / ready / dead.
        trials: Evaluations it finished.
        busy_s: Seconds spent evaluating.
        alive_s: Seconds from ready to death (or now).
        death: Why it died (empty if alive).
    """

    name: str
    node_ip: str
    state: str
    trials: int
    busy_s: float
    alive_s: float
    death: str = ""

    @property
    def utilisation(self) -> float:
        return self.busy_s / self.alive_s if self.alive_s > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class ExecutorStats:
    """A sweep's execution summary.

    Attributes:
        trials: Evaluations finished (each trial once).
        startup_s: Seconds from ``start`` to the first worker ready (model loaded).
        elapsed_s: Seconds from the first worker ready to the last result.
        trials_per_hour: ``trials`` / ``elapsed_s``, per hour (throughput once a worker runs).
        utilisation: Sum of busy seconds / sum of alive seconds over the workers.
        overhead_s: Mean seconds per evaluation spent outside the worker's evaluation
            (dispatch, transfer, result) as seen by the driver.
        retried: Evaluations re-run after their worker died.
        restarts: Workers replaced.
        workers: Per-worker figures.
    """

    trials: int
    startup_s: float
    elapsed_s: float
    trials_per_hour: float
    utilisation: float
    overhead_s: float
    retried: int
    restarts: int
    workers: tuple[WorkerStats, ...]


# ---------------------------------------------------------------------------------------------- actors
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

    def __init__(self, directory: str | Path | None, *, broker: Any, worker: str, max_memory_bytes: int = 2 << 30) -> None:
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

    def info(self) -> dict[str, Any]:
        s = self.cache.stats
        return {
            "name": self.name, "trials": self.trials, "busy_s": self.busy_s, "stats_passes": self.bench.stats_passes,
            "cache": {"memory_hits": s.memory_hits, "disk_hits": s.disk_hits, "shared_hits": s.shared_hits,
                      "misses": s.misses},
        }


# ---------------------------------------------------------------------------------------------- executor
@dataclasses.dataclass
class _Worker:
    label: str
    handle: Any
    ready_ref: Any | None
    name: str = ""
    node_ip: str = ""
    started: float = 0.0
    ready_at: float | None = None
    dead_at: float | None = None
    death: str = ""
    trials: int = 0
    busy_s: float = 0.0
    running: _Pending | None = None
    ref: Any | None = None
    dispatched_at: float = 0.0

    @property
    def alive(self) -> bool:
        return self.dead_at is None


@dataclasses.dataclass(frozen=True)
class _Pending:
    number: int
    plan: dict[str, Any]
    retries: tuple[str, ...] = ()


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
        if self._gpus:
            log.warning("workers reserve %s GPU(s) each; the compression pipeline itself runs on the CPU", self._gpus)
        hessian = space_needs_hessian(job.space)
        self._job = dataclasses.replace(job, hardware=_portable_ref(job.hardware) or job.hardware)
        self._hessian = hessian
        self._stats_ref = ray.put(bench.stats(hessian=hessian))  # computed once, by the driver
        self._factory = self.bench_factory or functools.partial(Workbench.load, _portable_ref(job.model_ref), job.data)
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
            timeout = self.config.start_timeout_s if only_starting else None
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
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
            self._lost(w, err)
            retries = (*job.retries, f"{w.name}: {_one_line(err)}")
            if len(retries) > self.config.max_retries:
                error = f"worker lost {len(retries)} times (max_retries={self.config.max_retries}); last: {retries[-1]}"
                return [(job.number, Evaluation(TrialOutcome.FAILED, error=error, worker=w.name, retries=retries))]
            self._retried += 1
            self._queue.appendleft(_Pending(job.number, job.plan, retries))
            return []
        w.trials += 1
        w.busy_s += ev.wall_s
        self._overhead.append(max(0.0, time.perf_counter() - w.dispatched_at - ev.wall_s))
        return [(job.number, dataclasses.replace(ev, retries=job.retries))]

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


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
