"""The roofline latency model and its calibration (pure math on costs and profiles).

A layer call moves ``bytes`` (its stored weights plus its input and output
activations) and performs ``flops`` on one unit (``dtype``). On a device with
bandwidth ``B`` and rate ``R[dtype]`` the roofline time is::

    t = max(bytes / (B * eta_bw), flops / (R[dtype] * eta_c)) + overhead

where ``eta_bw``, ``eta_c`` (fractions of peak actually reached) and ``overhead``
(a fixed cost per call: launch, Python dispatch, activation quantization) depend on
the kernel path that runs the layer. :func:`fit_calibration` fits them per path
to measured per-layer times on the host; :meth:`RooflineCalibration.ideal` (all
factors 1, no overhead) is the uncalibrated model used for devices nobody measured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from squeezeray._schema import check_header
from squeezeray._schema import check_keys
from squeezeray.hwprofiles._profile import ComputeDtype
from squeezeray.hwprofiles._profile import HardwareProfile
from squeezeray.hwprofiles._profile import ProfileError

CALIBRATION_TYPE = "squeezeray.RooflineCalibration"
CALIBRATION_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """What one call of one layer costs.

    Attributes:
        name: Layer (module) name.
        weight_bytes: Stored bytes of its weights (codes, scales, masks, factors, bias).
        act_bytes: Bytes of its input and output activations.
        flops: Operations (a multiply-add counts 2).
        dtype: Unit that does the math.
        path: Kernel path that runs it (calibration key), e.g. ``cpu-int4pack`` or ``dense-fp32``.
    """

    name: str
    weight_bytes: int
    act_bytes: int
    flops: float
    dtype: ComputeDtype
    path: str

    @property
    def nbytes(self) -> int:
        return self.weight_bytes + self.act_bytes


@dataclasses.dataclass(frozen=True)
class PathEfficiency:
    """Fractions of peak reached by one kernel path, and its fixed cost per call.

    Attributes:
        bandwidth: Fraction of the profile's memory bandwidth (> 0; may exceed 1 when data is cache-resident).
        compute: Fraction of the profile's rate for the cost's dtype (> 0).
        overhead_s: Seconds added to every call.
    """

    bandwidth: float = 1.0
    compute: float = 1.0
    overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if not (self.bandwidth > 0 and self.compute > 0 and self.overhead_s >= 0):
            raise ProfileError(f"efficiency {self}: factors must be > 0 and overhead >= 0")


IDEAL = PathEfficiency()


@dataclasses.dataclass(frozen=True)
class RooflineCalibration:
    """Per-path efficiencies, and what they were fitted on.

    Attributes:
        per_path: Path name -> efficiency; paths not listed are ideal.
        where: The device and data the fit used ("" for the ideal model).
        version: Serialisation version.
    """

    per_path: Mapping[str, PathEfficiency]
    where: str = ""
    version: int = CALIBRATION_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_path", MappingProxyType(dict(self.per_path)))

    @classmethod
    def ideal(cls) -> RooflineCalibration:
        """Every path at peak bandwidth and rate, no overhead (the textbook roofline)."""
        return cls({})

    def efficiency(self, path: str) -> PathEfficiency:
        """The fitted efficiency of ``path``; the ideal one for a path the calibration holds no fit for
        (see :meth:`covers`: predictions say which paths those were)."""
        return self.per_path.get(path, IDEAL)

    def covers(self, path: str) -> bool:
        return path in self.per_path

    def describe(self) -> str:
        return f"calibrated on {self.where}" if self.where else "uncalibrated (ideal roofline: peak rates, no overhead)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": CALIBRATION_TYPE,
            "_version": self.version,
            "where": self.where,
            "per_path": {p: dataclasses.asdict(e) for p, e in sorted(self.per_path.items())},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RooflineCalibration:
        check_header(d, type_=CALIBRATION_TYPE, version=CALIBRATION_VERSION, where="roofline calibration",
                     error=ProfileError)
        check_keys(d, ("_type", "_version", "where", "per_path"), where="roofline calibration", error=ProfileError)
        return cls({p: PathEfficiency(**e) for p, e in d["per_path"].items()}, d.get("where", ""))


@dataclasses.dataclass(frozen=True)
class RooflineTime:
    """A roofline prediction split into its terms (seconds)."""

    memory_s: float
    compute_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return max(self.memory_s, self.compute_s) + self.overhead_s

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s >= self.compute_s else "compute"


def roofline_time(cost: LayerCost, profile: HardwareProfile, calibration: RooflineCalibration) -> RooflineTime:
    """Predicted time of one call of ``cost`` on ``profile``.

    Raises:
        ProfileError: When the profile lacks the bandwidth or the rate of ``cost.dtype``.
    """
    eff = calibration.efficiency(cost.path)
    memory = cost.nbytes / (profile.bandwidth() * eff.bandwidth)
    compute = cost.flops / (profile.rate(cost.dtype) * eff.compute)
    return RooflineTime(memory, compute, eff.overhead_s)


_GRID = np.logspace(-3.0, 1.0, 81)  # candidate efficiency factors (0.001 .. 10)


def fit_path(memory_s: np.ndarray, compute_s: np.ndarray, measured_s: np.ndarray) -> PathEfficiency:
    """Least-squares fit (in log time) of one path's efficiencies and overhead.

    Args:
        memory_s: (n,) ideal memory times (bytes / peak bandwidth).
        compute_s: (n,) ideal compute times (flops / peak rate).
        measured_s: (n,) measured times, > 0.

    Returns:
        The grid point (eta_bw, eta_c) and overhead (median residual, >= 0) with the smallest
        mean squared log error.
    """
    if not (memory_s.shape == compute_s.shape == measured_s.shape) or measured_s.size == 0:
        raise ValueError("fit_path needs equal, non-empty arrays")
    if bool((measured_s <= 0).any()):
        raise ValueError("measured times must be positive")
    bw = _GRID[:, None, None]  # (G, 1, 1)
    cp = _GRID[None, :, None]  # (1, G, 1)
    base = np.maximum(memory_s[None, None, :] / bw, compute_s[None, None, :] / cp)  # (G, G, n)
    overhead = np.clip(np.median(measured_s[None, None, :] - base, axis=-1), 0.0, None)  # (G, G)
    pred = base + overhead[..., None]  # (G, G, n)
    loss = np.mean(np.log(pred / measured_s) ** 2, axis=-1)  # (G, G)
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return PathEfficiency(float(_GRID[i]), float(_GRID[j]), float(overhead[i, j]))


def fit_calibration(
    samples: Sequence[tuple[LayerCost, float]], profile: HardwareProfile, *, where: str
) -> RooflineCalibration:
    """Fit one :class:`PathEfficiency` per path to measured (cost, seconds) samples on ``profile``."""
    by_path: dict[str, list[tuple[LayerCost, float]]] = {}
    for cost, seconds in samples:
        by_path.setdefault(cost.path, []).append((cost, seconds))
    per_path = {}
    for path, items in by_path.items():
        ideal = [roofline_time(c, profile, RooflineCalibration.ideal()) for c, _ in items]
        per_path[path] = fit_path(
            np.array([t.memory_s for t in ideal]),
            np.array([t.compute_s for t in ideal]),
            np.array([s for _, s in items]),
        )
    return RooflineCalibration(per_path, where)


def relative_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured."""
    if measured <= 0 or not math.isfinite(measured):
        raise ValueError(f"measured={measured}: must be positive and finite")
    return (predicted - measured) / measured
