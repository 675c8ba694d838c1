"""What a search is asked to do: :class:`SearchConfig` (model, space, objectives, sampler, budget,
constraints, storage) and the sampler it names."""

from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path

import optuna

from squeezeray._device import resolve_device
from squeezeray._errors import SqueezerayError
from squeezeray._offload import TIMING_REFUSAL
from squeezeray._offload import check_offload
from squeezeray._schema import check_int
from squeezeray._schema import enum_value
from squeezeray.models import ModelDtype
from squeezeray.objectives import objective_class
from squeezeray.objectives._registry import refuse_timed
from squeezeray.search._evo import EvoConfig
from squeezeray.search._evo import EvoSampler
from squeezeray.spaces import SearchSpace
from squeezeray.workbench import DataConfig


class Resume(str, enum.Enum):
    """What ``run_search`` does with a study of the same name in the storage."""

    NEW = "new"  # start it; refuse if it exists
    CONTINUE = "continue"  # continue it; refuse if it does not exist
    AUTO = "auto"  # continue it if it exists, else start it (a job that a scheduler may restart)

    @classmethod
    def of(cls, value: bool | str | Resume) -> Resume:
        if isinstance(value, bool):
            return cls.CONTINUE if value else cls.NEW
        try:
            return cls(value)
        except ValueError:
            raise SqueezerayError(
                f"resume={value!r}: expected True/False or one of {', '.join(m.value for m in cls)}"
            ) from None

class SamplerName(str, enum.Enum):
    NSGA2 = "nsga2"
    TPE = "tpe"
    RANDOM = "random"
    GP = "gp"
    EVO = "evo"  # sensitivity + knapsack seeds + evolutionary refinement (squeezeray.search._evo)

@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs, validated once.

    Attributes:
        model: Model reference (None: the embedded default).
        dtype: Weights' dtype (``auto``: the checkpoint's own, see :class:`~squeezeray.models.ModelDtype`).
        device: Where the driver's model, calibration and in-process trials run: ``auto`` (the first CUDA device
            when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; checked here, before anything
            loads. Ray workers resolve it on their own node (``auto`` there: the GPU Ray gave the worker).
        offload: Keep the decoder blocks on the host and run each on ``device`` (a GPU) for its forward only
            (:mod:`squeezeray._offload`); latency and energy cannot be objectives then.
        hardware: Hardware profile name or YAML path (``host``: this machine, measured).
        space: Preset space name, YAML file, or a SearchSpace.
        objectives: Search-stage objectives the sampler optimises (cheap).
        final_objectives: Objectives re-measured for trials on or near the front.
        n_trials: Trials to finish (baselines included).
        sampler: nsga2 (default), tpe, random, gp, or evo (per-unit sensitivity, knapsack seeds across the
            budget band, then evolutionary refinement; needs the ``size`` and ``kl`` objectives).
        seed: Sampler seed (calibration data keeps its own seed in ``data``).
        max_size_bytes: Constraint told to the sampler (None: none).
        max_kl: Constraint on the KL proxy told to the sampler (None: none).
        baselines: Uniform presets queued first; None: one per quantize option of the space.
        rerank: How many trials to re-measure on the final objectives: the search front first, then the
            nearest others; a front larger than this is thinned evenly along the first objective.
        data: Calibration / evaluation sizes.
        workdir: Where studies, caches and reports go.
        study_name: Study name (default derived from model and space).
        storage: RDB URL (default ``sqlite:///<workdir>/<study>/study.db``; PostgreSQL URLs work).
        allow: Expert-rule names the user lifts.
        evo: Settings of the ``evo`` sampler (band in average bits, seeds, mutation, sensitivity proxy).
        memory_limit_gib: Memory the search may use (None: the machine's available memory); a search whose
            estimated peak exceeds it is refused before the weights load (:mod:`squeezeray.search._footprint`).
    """

    model: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    offload: bool = False
    hardware: str = "host"
    space: str | SearchSpace = "weights-int"
    objectives: tuple[str, ...] = ("size", "kl")
    final_objectives: tuple[str, ...] = ("size", "perplexity", "kl", "latency")
    n_trials: int = 40
    sampler: SamplerName = SamplerName.NSGA2
    seed: int = 0
    max_size_bytes: float | None = None
    max_kl: float | None = None
    baselines: tuple[str, ...] | None = None
    rerank: int = 6
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    workdir: Path = Path("runs")
    study_name: str | None = None
    storage: str | None = None
    allow: tuple[str, ...] = ()
    evo: EvoConfig = dataclasses.field(default_factory=EvoConfig)
    memory_limit_gib: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sampler", enum_value(SamplerName, self.sampler, where="sampler"))
        object.__setattr__(self, "dtype", enum_value(ModelDtype, self.dtype, where="dtype").value)
        check_offload(resolve_device(self.device, field="device"), self.offload)
        object.__setattr__(self, "device", str(self.device).strip().lower())
        for field in ("objectives", "final_objectives"):
            names = tuple(getattr(self, field))
            object.__setattr__(self, field, names)
            if not names:
                raise SqueezerayError(f"{field}: needs at least one objective")
            for n in names:
                objective_class(n)
            if self.offload:
                refuse_timed(names, field=field, reason=TIMING_REFUSAL)
        if self.sampler is SamplerName.EVO and not {"size", "kl"} <= set(self.objectives):
            raise SqueezerayError(f"sampler='evo' needs the objectives size and kl, got objectives={list(self.objectives)}")
        if not isinstance(self.evo, EvoConfig):
            raise SqueezerayError(f"evo={self.evo!r}: must be an EvoConfig")
        check_int(self.n_trials, field="n_trials")
        check_int(self.rerank, field="rerank")
        for field in ("max_size_bytes", "max_kl", "memory_limit_gib"):
            v = getattr(self, field)
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise SqueezerayError(f"{field}={v!r}: must be a positive number")
        object.__setattr__(self, "workdir", Path(self.workdir))
        if self.study_name is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.study_name):
            raise SqueezerayError(f"study_name={self.study_name!r}: use letters, digits, '_', '.', '+', '-'")

    def resolved_study_name(self, model_ref: str | None = None) -> str:
        if self.study_name:
            return self.study_name
        ref = model_ref or self.model
        model = Path(ref).name if ref else "smollm2"
        space = self.space.name if isinstance(self.space, SearchSpace) else Path(str(self.space)).stem
        return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{model}-{space}-{self.sampler.value}-s{self.seed}")

    def storage_url(self, model_ref: str | None = None) -> str:
        if self.storage:
            return self.storage
        folder = self.workdir / self.resolved_study_name(model_ref)
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(folder / 'study.db').resolve()}"

def make_sampler(
    name: SamplerName, seed: int, n_trials: int, evo: EvoConfig | None = None
) -> optuna.samplers.BaseSampler:
    if name is SamplerName.EVO:
        return EvoSampler(config=evo, seed=seed)
    if name is SamplerName.NSGA2:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, n_trials // 3)))
    if name is SamplerName.TPE:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(2, n_trials // 4)))
    if name is SamplerName.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, n_trials // 4)))
