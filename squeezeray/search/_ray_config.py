"""How a Ray sweep is set up and what it reports: :class:`RayConfig` (cluster address, auth, workers,
retries), and the per-worker and per-executor statistics."""

from __future__ import annotations

import dataclasses
import enum
import logging
import os


from squeezeray._errors import SqueezerayError
from squeezeray._schema import enum_value


log = logging.getLogger(__name__)


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
            object.__setattr__(self, "auth_mode", enum_value(RayAuthMode, self.auth_mode, where="auth_mode"))
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
        retried: Evaluations (trials, and sensitivity units) re-run after their worker died.
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
