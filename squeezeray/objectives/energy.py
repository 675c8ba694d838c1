"""Energy per generated token: counted by NVML or RAPL where readable, else modelled as power x time.

Sources, in the order ``EnergySource.AUTO`` tries them:

* ``nvml``: the GPU's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ; Volta and
  newer) read around the decode steps, when the model is on a CUDA device and ``pynvml`` imports.
* ``rapl``: ``/sys/class/powercap/intel-rapl:*/energy_uj`` package counters (wrap-around handled),
  when readable. They count the whole CPU package, other processes included.
* ``modelled``: ``power x time``, with the time measured here (or predicted by the roofline for a
  profile) and the power given explicitly or taken as the profile's TDP: an upper bound that assumes
  the device runs at its TDP throughout. Provenance is then ``predicted`` and the Measurement's
  ``where`` states both assumptions.

Asking for a specific source that is not readable raises; ``auto`` records which one it used.
"""

from __future__ import annotations

import abc
import enum
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.hwprofiles import RooflineCalibration
from squeezeray.hwprofiles import get_profile
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Need
from squeezeray.objectives._base import Provenance
from squeezeray._device import host_description
from squeezeray._device import model_device
from squeezeray._offload import refuse_offloaded
from squeezeray.objectives.latency import Phase
from squeezeray.objectives.latency import decode_step
from squeezeray.objectives.latency import prefill
from squeezeray.objectives.latency import time_decode

POWERCAP = Path("/sys/class/powercap")


class EnergySource(str, enum.Enum):
    AUTO = "auto"
    NVML = "nvml"
    RAPL = "rapl"
    MODELLED = "modelled"


class EnergyCounter(abc.ABC):
    """A cumulative hardware energy counter."""

    @abc.abstractmethod
    def read_j(self) -> float:
        """Joules since an arbitrary origin (monotonic, wrap-around handled by :meth:`delta_j`)."""

    def delta_j(self, start: float, end: float) -> float:
        return end - start

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """What is counted, for the Measurement's ``where``."""


class RaplCounter(EnergyCounter):
    """Sum of the readable RAPL package domains."""

    def __init__(self, domains: list[Path]) -> None:
        self.domains = domains
        self.ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]

    def read_j(self) -> float:
        return sum(int((d / "energy_uj").read_text()) for d in self.domains) / 1e6

    def delta_j(self, start: float, end: float) -> float:
        d = end - start
        return d if d >= 0 else d + sum(self.ranges) / 1e6  # one wrap of a counter

    @property
    def description(self) -> str:
        names = ", ".join(d.name for d in self.domains)
        return f"RAPL package energy counters ({names}); whole package, other processes included"


class NvmlCounter(EnergyCounter):
    """NVML total energy of one GPU."""

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.name = pynvml.nvmlDeviceGetName(self._handle)

    def read_j(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0

    @property
    def description(self) -> str:
        return f"NVML total-energy counter of {self.name}"


def rapl_counter() -> tuple[RaplCounter | None, str]:
    """The package RAPL counter and "", or None and why it is unavailable."""
    if not POWERCAP.is_dir():
        return None, f"{POWERCAP} does not exist"
    domains = sorted(p for p in POWERCAP.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not domains:
        return None, f"no intel-rapl package domains under {POWERCAP}"
    try:
        counter = RaplCounter(domains)
        counter.read_j()
    except (OSError, ValueError) as err:
        return None, f"RAPL counters are not readable: {err}"
    return counter, ""


def nvml_counter(device: torch.device) -> tuple[NvmlCounter | None, str]:
    """The NVML counter of ``device`` and "", or None and why it is unavailable."""
    if device.type != "cuda":
        return None, "model is not on a CUDA device"
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return None, "pynvml is not installed"
    try:
        return NvmlCounter(device.index or 0), ""
    except Exception as err:  # noqa: BLE001 - NVML raises its own error types
        return None, f"NVML energy counter unavailable: {err}"


class Energy(BaseObjective, needs={Need.PROFILE}):
    """Joules per generated token in decode (counted where possible, else modelled and labelled so).

    Args:
        source: ``auto`` (NVML, then RAPL, then modelled) or one source, which must then be readable.
        batch, seq_len: Sequences decoding and their context length.
        new_tokens, warmup, repeats: Decode steps timed per repetition, repetitions.
        power_w: Power assumed when modelling (overrides the profile's TDP).
        profile: For modelling: a profile name whose TDP is the power and, unless it is ``host``,
            whose roofline (with ``calibration``) predicts the time instead of measuring it.
        calibration: Roofline calibration for a predicted time.
    """

    name = "energy"
    direction = Direction.MINIMIZE
    unit = "J/token"

    def __init__(
        self,
        *,
        source: EnergySource | str = EnergySource.AUTO,
        batch: int = 1,
        seq_len: int = 128,
        new_tokens: int = 16,
        warmup: int = 1,
        repeats: int = 3,
        power_w: float | None = None,
        profile: str | HardwareProfile | None = None,
        calibration: RooflineCalibration | None = None,
    ) -> None:
        self.source = EnergySource(source)
        self.batch, self.seq_len, self.new_tokens = batch, seq_len, new_tokens
        self.warmup, self.repeats = warmup, repeats
        if power_w is not None and not power_w > 0:
            raise SqueezerayError(f"power_w={power_w!r}: must be positive")
        self.power_w = power_w
        self.profile = get_profile(profile) if isinstance(profile, str) and profile != "host" else profile
        self.calibration = calibration

    def _ids(self, ctx: EvalContext) -> torch.Tensor:
        return ctx.eval_data.ids.reshape(-1)[: self.batch * self.seq_len].view(self.batch, self.seq_len)

    def measure(self, ctx: EvalContext) -> Measurement:
        refuse_offloaded(ctx.candidate, "energy")
        device = model_device(ctx.candidate)
        tried: list[str] = []
        if self.source in (EnergySource.AUTO, EnergySource.NVML):
            counter, why = nvml_counter(device)
            if counter is not None:
                return self._counted(ctx, counter, device)
            tried.append(f"nvml: {why}")
        if self.source in (EnergySource.AUTO, EnergySource.RAPL):
            counter2, why = rapl_counter()
            if counter2 is not None:
                return self._counted(ctx, counter2, device)
            tried.append(f"rapl: {why}")
        if self.source is not EnergySource.AUTO and self.source is not EnergySource.MODELLED:
            raise SqueezerayError(f"energy source {self.source.value!r} is not readable: {'; '.join(tried)}")
        return self._modelled(ctx, tried)

    @torch.no_grad()
    def _counted(self, ctx: EvalContext, counter: EnergyCounter, device: torch.device) -> Measurement:
        model: nn.Module = ctx.candidate
        ids = self._ids(ctx).to(device)
        time_decode(model, ids, new_tokens=2, warmup=0, repeats=1)  # warm-up
        per_token = []
        for _ in range(self.repeats):
            cache, tok = prefill(model, ids), ids[:, -1:]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            e0 = counter.read_j()
            t0 = time.perf_counter()
            for _ in range(self.new_tokens):
                cache = decode_step(model, tok, cache)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            per_token.append((counter.delta_j(e0, counter.read_j()), dt))
        joules = [e / (self.new_tokens * self.batch) for e, _ in per_token]
        return Measurement(
            self.name, statistics.median(joules), self.unit, Provenance.MEASURED,
            f"{counter.description}; decode on {host_description() if device.type == 'cpu' else str(device)}",
            {"source": "nvml" if isinstance(counter, NvmlCounter) else "rapl", "joules_per_token": joules,
             "seconds_per_step": [t / self.new_tokens for _, t in per_token], "shape": [self.batch, self.seq_len]},
        )

    def _modelled(self, ctx: EvalContext, tried: list[str]) -> Measurement:
        profile = self.profile
        if self.power_w is not None:
            power, power_src = self.power_w, f"P = {self.power_w:g} W (given)"
        elif profile is not None:
            if isinstance(profile, str):
                profile = get_profile(profile)
            power = profile.tdp_w.require(f"{profile.name} TDP")
            power_src = f"P = {power:g} W = TDP of {profile.name} ({profile.tdp_w.source}), assumed drawn throughout"
        else:
            raise SqueezerayError(
                "no energy counter is readable (" + "; ".join(tried) + ") and no power figure was given: "
                "pass power_w= or a profile with a TDP to model energy"
            )
        if profile is not None and not isinstance(profile, str) and profile.name != "host":
            from squeezeray.objectives.predicted_latency import PredictedLatency

            pred = PredictedLatency(profile=profile, phase=Phase.DECODE, batch=self.batch, seq_len=self.seq_len, calibration=self.calibration)
            seconds, _ = pred.predict(ctx.candidate)
            time_src = f"t = {1000 * seconds:.3g} ms/step predicted by the roofline ({pred.calibration.describe()})"
        else:
            steps = time_decode(ctx.candidate, self._ids(ctx), new_tokens=self.new_tokens, warmup=self.warmup, repeats=self.repeats)
            seconds = statistics.median(steps)
            time_src = f"t = {1000 * seconds:.3g} ms/step measured on {host_description()}"
        joules = power * seconds / self.batch
        return Measurement(
            self.name, joules, self.unit, Provenance.PREDICTED,
            f"modelled: E = P x t per token; {power_src}; {time_src}",
            {"source": "modelled", "power_w": power, "seconds_per_step": seconds, "unavailable": tried,
             "shape": [self.batch, self.seq_len]},
        )
