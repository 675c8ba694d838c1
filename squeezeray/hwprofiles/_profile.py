"""Hardware profiles: the numbers a roofline model and an energy model need, each with its source.

A profile is a frozen :class:`HardwareProfile`. Built-in profiles are YAML files
in ``squeezeray/hwprofiles/profiles/``; users pass the path of their own file to
:func:`~squeezeray.hwprofiles.get_profile`. Every number is a :class:`Figure`
that says where it comes from (a datasheet, arithmetic on datasheet figures, a
measurement on this machine, or an estimate). Loading rejects unknown keys and
names them, so a typo never silently drops a number.

A YAML file looks like::

    _type: squeezeray.HardwareProfile
    _version: 1
    name: h100-sxm
    device: NVIDIA H100 SXM5 80GB
    kind: gpu
    vendor: nvidia
    dense_tops:            # tera-operations per second, dense (no sparsity)
      fp16: {value: 989.4, basis: derived, source: "..."}
      ...
    sparse24_speedup: {value: 2.0, basis: datasheet, source: "..."}
    memory_bandwidth_gbs: {value: 3350, basis: datasheet, source: "..."}
    memory_capacity_gb: {value: 80, basis: datasheet, source: "..."}
    tdp_w: {value: 700, basis: datasheet, source: "..."}
    idle_w: {value: null, basis: unavailable, source: "not published"}
    formats: [fp32, fp16, bf16, fp8, int8]
    kernels: [torch-reference, triton-dequant-gemm, triton-sparse24, triton-w8a8]
    features: [sm_90]
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_header
from squeezeray._schema import did_you_mean
from squeezeray._schema import enum_value
from squeezeray._schema import load_document
from squeezeray.kernels._names import KernelPath

PROFILE_TYPE = "squeezeray.HardwareProfile"
PROFILE_VERSION = 1


class ProfileError(SqueezerayError):
    """A hardware profile file is malformed; the message names the file and the key."""


class DeviceKind(str, enum.Enum):
    """What executes the model."""

    GPU = "gpu"  # discrete accelerator with its own memory
    CPU = "cpu"  # server / desktop CPU
    SOC = "soc"  # system-on-chip with unified memory (Jetson, Apple silicon)


class ComputeDtype(str, enum.Enum):
    """A number format the hardware multiplies in; keys of :attr:`HardwareProfile.dense_tops`."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


class Basis(str, enum.Enum):
    """Where a :class:`Figure` comes from."""

    DATASHEET = "datasheet"  # printed by the vendor
    DERIVED = "derived"  # arithmetic on vendor figures (e.g. a sparse figure halved); see the note
    MEASURED = "measured"  # microbenchmark on this machine
    ESTIMATE = "estimate"  # not published; an informed estimate, treat with care
    UNAVAILABLE = "unavailable"  # no figure exists (value is null)


@dataclasses.dataclass(frozen=True)
class Figure:
    """One number and its provenance.

    Attributes:
        value: The number in the unit its field names, or None when ``basis`` is unavailable.
        source: Document, URL or command it comes from.
        basis: Datasheet / derived / measured / estimate / unavailable.
        note: How it was derived or why it is uncertain.
    """

    value: float | None
    source: str
    basis: Basis = Basis.DATASHEET
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.basis, Basis):
            object.__setattr__(self, "basis", Basis(self.basis))
        if self.value is not None:
            if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
                raise ProfileError(f"value {self.value!r}: must be a number or null")
            object.__setattr__(self, "value", float(self.value))
            if not math.isfinite(self.value) or self.value < 0:
                raise ProfileError(f"value {self.value!r}: must be finite and non-negative")
        if (self.value is None) != (self.basis is Basis.UNAVAILABLE):
            raise ProfileError(f"value {self.value!r} with basis {self.basis.value!r}: null values, and only they, are 'unavailable'")
        if not isinstance(self.source, str) or not self.source.strip():
            raise ProfileError("every figure needs a non-empty source")

    @property
    def uncertain(self) -> bool:
        """True for estimates and derived figures (not printed as such by the vendor)."""
        return self.basis in (Basis.ESTIMATE, Basis.DERIVED)

    def require(self, what: str) -> float:
        """The value, or a :class:`ProfileError` naming ``what`` when there is none."""
        if self.value is None:
            raise ProfileError(f"{what} is not available ({self.source})")
        return self.value

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "basis": self.basis.value, "source": self.source}
        if self.note:
            d["note"] = self.note
        return d


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
    """What a device can do, for roofline latency and modelled energy.

    Attributes:
        name: Short identifier (``h100-sxm``); the file stem of built-in profiles.
        device: Full product name.
        kind: GPU, CPU or SoC.
        vendor: Lower-case vendor name.
        dense_tops: Dense throughput in tera-operations per second per compute dtype
            (FLOP for floats, integer ops for ints; a multiply-add counts as 2).
            A dtype the device cannot compute is absent or has an unavailable figure.
        sparse24_speedup: Peak speed-up of 2:4 semi-structured sparse over dense math (1 = none).
        memory_bandwidth_gbs: Peak DRAM/HBM bandwidth, GB/s (10^9 bytes).
        memory_capacity_gb: Device memory, GB.
        tdp_w: Thermal design power / max board power, W.
        idle_w: Idle power, W.
        formats: Dtypes the hardware multiplies natively.
        kernels: Kernel paths that run on this device.
        features: ISA / architecture features (``avx512_vnni``, ``amx_int8``, ``sm_90``).
        version: Schema version.
    """

    name: str
    device: str
    kind: DeviceKind
    vendor: str
    dense_tops: Mapping[ComputeDtype, Figure]
    sparse24_speedup: Figure
    memory_bandwidth_gbs: Figure
    memory_capacity_gb: Figure
    tdp_w: Figure
    idle_w: Figure
    formats: frozenset[ComputeDtype]
    kernels: tuple[KernelPath, ...]
    features: tuple[str, ...] = ()
    version: int = PROFILE_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense_tops", MappingProxyType(dict(self.dense_tops)))
        object.__setattr__(self, "formats", frozenset(self.formats))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        object.__setattr__(self, "features", tuple(self.features))
        if not self.name or not isinstance(self.name, str):
            raise ProfileError(f"name={self.name!r}: must be a non-empty string")
        for key, fig in self.dense_tops.items():
            if not isinstance(key, ComputeDtype) or not isinstance(fig, Figure):
                raise ProfileError(f"{self.name}: dense_tops entry {key!r} must map a ComputeDtype to a Figure")
        speedup = self.sparse24_speedup.value
        if speedup is not None and speedup < 1.0:
            raise ProfileError(f"{self.name}: sparse24_speedup={speedup}: must be >= 1")
        tdp, idle = self.tdp_w.value, self.idle_w.value
        if tdp is not None and idle is not None and idle >= tdp:
            raise ProfileError(f"{self.name}: idle_w={idle} must be below tdp_w={tdp}")
        if KernelPath.REFERENCE not in self.kernels:
            raise ProfileError(f"{self.name}: kernels must include {KernelPath.REFERENCE.value!r} (it runs anywhere)")

    # ------------------------------------------------------------ queries
    def rate(self, dtype: ComputeDtype) -> float:
        """Dense operations per second for ``dtype``, or :class:`ProfileError` if the device has none."""
        fig = self.dense_tops.get(dtype)
        if fig is None:
            raise ProfileError(f"{self.name}: no dense throughput figure for {dtype.value}")
        return fig.require(f"{self.name} dense {dtype.value} throughput") * 1e12

    def bandwidth(self) -> float:
        """Peak memory bandwidth in bytes per second."""
        return self.memory_bandwidth_gbs.require(f"{self.name} memory bandwidth") * 1e9

    def figures(self) -> dict[str, Figure]:
        """Every figure by a dotted field name (``dense_tops.fp16``, ``tdp_w``)."""
        out = {f"dense_tops.{k.value}": v for k, v in self.dense_tops.items()}
        for field in ("sparse24_speedup", "memory_bandwidth_gbs", "memory_capacity_gb", "tdp_w", "idle_w"):
            out[field] = getattr(self, field)
        return out

    # ------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": PROFILE_TYPE,
            "_version": self.version,
            "name": self.name,
            "device": self.device,
            "kind": self.kind.value,
            "vendor": self.vendor,
            "dense_tops": {k.value: v.to_dict() for k, v in sorted(self.dense_tops.items(), key=lambda kv: kv[0].value)},
            "sparse24_speedup": self.sparse24_speedup.to_dict(),
            "memory_bandwidth_gbs": self.memory_bandwidth_gbs.to_dict(),
            "memory_capacity_gb": self.memory_capacity_gb.to_dict(),
            "tdp_w": self.tdp_w.to_dict(),
            "idle_w": self.idle_w.to_dict(),
            "formats": sorted(f.value for f in self.formats),
            "kernels": [k.value for k in self.kernels],
            "features": list(self.features),
        }

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "profile") -> HardwareProfile:
        """Validate a parsed YAML/JSON mapping; errors name ``origin`` and the offending key."""
        return _parse_profile(data, origin)


# ------------------------------------------------------------------ parsing
_FIGURE_KEYS = ("value", "source", "basis", "note")
_TOP_KEYS = (
    "_type", "_version", "name", "device", "kind", "vendor", "dense_tops", "sparse24_speedup",
    "memory_bandwidth_gbs", "memory_capacity_gb", "tdp_w", "idle_w", "formats", "kernels", "features",
)
_REQUIRED = tuple(k for k in _TOP_KEYS if k != "features")


def _unknown(origin: str, where: str, key: object, allowed: tuple[str, ...]) -> ProfileError:
    hint = did_you_mean(str(key), allowed, n=1, cutoff=0.6)
    return ProfileError(f"{origin}: unknown key {key!r} in {where}.{hint} Allowed: {', '.join(allowed)}")


def _enum(origin: str, where: str, cls: type[enum.Enum], value: object) -> Any:
    return enum_value(cls, value, where=f"{origin}: {where}", error=ProfileError)


def _figure(origin: str, where: str, data: object) -> Figure:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: {where} must be a mapping with value/source/basis, got {data!r}")
    for key in data:
        if key not in _FIGURE_KEYS:
            raise _unknown(origin, where, key, _FIGURE_KEYS)
    for key in ("value", "source", "basis"):
        if key not in data:
            raise ProfileError(f"{origin}: {where} is missing {key!r}")
    basis = _enum(origin, f"{where}.basis", Basis, data["basis"])
    try:
        return Figure(data["value"], data["source"], basis, str(data.get("note", "")))
    except ProfileError as err:
        raise ProfileError(f"{origin}: {where}: {err}") from None


def _parse_profile(data: Any, origin: str) -> HardwareProfile:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: a profile must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown(origin, "the profile", key, _TOP_KEYS)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ProfileError(f"{origin}: missing key(s) {', '.join(missing)}")
    check_header(data, type_=PROFILE_TYPE, version=PROFILE_VERSION, where=origin, error=ProfileError)
    tops_raw = data["dense_tops"]
    if not isinstance(tops_raw, Mapping):
        raise ProfileError(f"{origin}: dense_tops must be a mapping of dtype to figure")
    allowed_dtypes = tuple(d.value for d in ComputeDtype)
    tops: dict[ComputeDtype, Figure] = {}
    for key, fig in tops_raw.items():
        if key not in allowed_dtypes:
            raise _unknown(origin, "dense_tops", key, allowed_dtypes)
        tops[ComputeDtype(key)] = _figure(origin, f"dense_tops.{key}", fig)
    for key in ("formats", "kernels", "features"):
        if key in data and not isinstance(data[key], list):
            raise ProfileError(f"{origin}: {key} must be a list")
    formats = frozenset(_enum(origin, "formats[]", ComputeDtype, f) for f in data["formats"])
    kernels = tuple(_enum(origin, "kernels[]", KernelPath, k) for k in data["kernels"])
    for key in ("name", "device", "vendor"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ProfileError(f"{origin}: {key} must be a non-empty string")
    try:
        return HardwareProfile(
            name=data["name"],
            device=data["device"],
            kind=_enum(origin, "kind", DeviceKind, data["kind"]),
            vendor=data["vendor"],
            dense_tops=tops,
            sparse24_speedup=_figure(origin, "sparse24_speedup", data["sparse24_speedup"]),
            memory_bandwidth_gbs=_figure(origin, "memory_bandwidth_gbs", data["memory_bandwidth_gbs"]),
            memory_capacity_gb=_figure(origin, "memory_capacity_gb", data["memory_capacity_gb"]),
            tdp_w=_figure(origin, "tdp_w", data["tdp_w"]),
            idle_w=_figure(origin, "idle_w", data["idle_w"]),
            formats=formats,
            kernels=kernels,
            features=tuple(str(f) for f in data.get("features", [])),
        )
    except ProfileError as err:
        msg = str(err)
        raise ProfileError(msg if msg.startswith(origin) else f"{origin}: {msg}") from None


def load_profile(path: str | Path) -> HardwareProfile:
    """Read and validate one profile YAML file."""
    p = Path(path).expanduser()
    return HardwareProfile.from_dict(load_document(p, what="profile file", error=ProfileError, syntax="yaml"),
                                     origin=p.name)
