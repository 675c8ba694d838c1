"""What a rule looks at: a :class:`Condition` on the hardware profile and a :class:`Selector` over the
step an option label parses to (the rule-file language is described in :mod:`squeezeray.search._rules`).
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
from collections.abc import Mapping
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_keys
from squeezeray._schema import enum_value
from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import DeviceKind
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.techniques import FP8Config
from squeezeray.techniques import IntQuantConfig
from squeezeray.techniques import NF4Config
from squeezeray.techniques import PruneConfig
from squeezeray.techniques import SparsityPattern
from squeezeray.techniques import StepKind
from squeezeray.techniques import TechniqueConfig
from squeezeray.techniques import W8A8Config
from squeezeray.techniques._registry import config_class

# The option lists of a group that rules act on (orders are not options of a step).
FIELDS = ("quantize", "prune", "lowrank")
# Names a reason template may use.
REASON_FIELDS = ("profile", "option", "group", "rule", "formats", "sparse24_speedup")


class RuleEffect(str, enum.Enum):
    """What a rule does to the options it selects."""

    REMOVE = "remove"  # drop them from the space
    NOTE = "note"  # keep them, attach an annotation


def _checked_mapping(data: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(data, Mapping):
        raise SqueezerayError(f"{where}: must be a mapping, got {data!r}")
    check_keys(data, keys, where=where)


def _built(cls: Any, data: Mapping[str, Any], where: str, prefix: str) -> Any:
    """``cls(**data)``, its errors re-worded to name ``where`` (instead of the generic ``prefix``)."""
    try:
        return cls(**data)
    except SqueezerayError as err:
        raise SqueezerayError(f"{where}: {str(err).removeprefix(prefix)}") from None


def _globs(where: str, field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise SqueezerayError(f"{where}: {field}={value!r}: must be a list of non-empty glob strings")
    return tuple(value)


def _enum(where: str, field: str, cls: type[enum.Enum], value: Any) -> Any:
    return enum_value(cls, value, where=f"{where}: {field}")


def _number(where: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SqueezerayError(f"{where}: {field}={value!r}: must be a number")
    return float(value)


# ---------------------------------------------------------------- pure helpers
def step_bits(step: TechniqueConfig) -> int | None:
    """Bits per stored weight code of a quantize step; None for prune and low-rank steps.

    Integer methods (RTN/GPTQ/AWQ) give their ``bits``; NF4 is 4; FP8 and W8A8 are 8.
    """
    if isinstance(step, IntQuantConfig):
        return step.bits
    if isinstance(step, NF4Config):
        return 4
    if isinstance(step, (FP8Config, W8A8Config)):
        return 8
    return None


def sparse24_speedup(profile: HardwareProfile) -> float:
    """The profile's 2:4 speed-up; an unavailable figure counts as 1.0 (no speed-up claimed)."""
    value = profile.sparse24_speedup.value
    return 1.0 if value is None else float(value)


# ------------------------------------------------------------------ condition
_CONDITION_KEYS = (
    "always", "profile_lacks_format", "profile_has_format", "profile_sparse24_speedup_at_most",
    "profile_sparse24_speedup_above", "profile_kind",
)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@dataclasses.dataclass(frozen=True)
class Condition:
    """When a rule applies, as a test of the hardware profile; every key set must hold.

    Attributes:
        always: True: applies on every profile (must be the only key).
        profile_lacks_format: Applies when the profile's ``formats`` lack this dtype.
        profile_has_format: Applies when the profile's ``formats`` hold this dtype.
        profile_sparse24_speedup_at_most: Applies when the 2:4 speed-up is <= this.
        profile_sparse24_speedup_above: Applies when the 2:4 speed-up is > this.
        profile_kind: Applies when the profile's kind is one of these.
    """

    always: bool = False
    profile_lacks_format: ComputeDtype | None = None
    profile_has_format: ComputeDtype | None = None
    profile_sparse24_speedup_at_most: float | None = None
    profile_sparse24_speedup_above: float | None = None
    profile_kind: tuple[DeviceKind, ...] = ()

    def __post_init__(self) -> None:
        where = "rule condition"
        if not isinstance(self.always, bool):
            raise SqueezerayError(f"{where}: always={self.always!r}: must be true")
        for key in ("profile_lacks_format", "profile_has_format"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _enum(where, key, ComputeDtype, getattr(self, key)))
        for key in ("profile_sparse24_speedup_at_most", "profile_sparse24_speedup_above"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _number(where, key, getattr(self, key)))
        kinds = tuple(_enum(where, "profile_kind", DeviceKind, k) for k in _as_tuple(self.profile_kind))
        object.__setattr__(self, "profile_kind", kinds)
        n_tests = sum(getattr(self, k) not in (None, ()) for k in _CONDITION_KEYS[1:])
        if self.always and n_tests:
            raise SqueezerayError(f"{where}: always=true cannot be combined with profile tests")
        if not self.always and not n_tests:
            raise SqueezerayError(f"{where}: give always: true or one of {', '.join(_CONDITION_KEYS[1:])}")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Condition:
        where = f"{where}.when"
        _checked_mapping(data, _CONDITION_KEYS, where)
        if "always" in data and data["always"] is not True:
            raise SqueezerayError(f"{where}: always={data['always']!r}: must be true (delete the rule to disable it)")
        return _built(cls, data, where, "rule condition: ")

    def holds(self, profile: HardwareProfile) -> bool:
        if self.always:
            return True
        ok = True
        if self.profile_lacks_format is not None:
            ok &= self.profile_lacks_format not in profile.formats
        if self.profile_has_format is not None:
            ok &= self.profile_has_format in profile.formats
        if self.profile_sparse24_speedup_at_most is not None:
            ok &= sparse24_speedup(profile) <= self.profile_sparse24_speedup_at_most
        if self.profile_sparse24_speedup_above is not None:
            ok &= sparse24_speedup(profile) > self.profile_sparse24_speedup_above
        if self.profile_kind:
            ok &= profile.kind in self.profile_kind
        return ok


# ------------------------------------------------------------------- selector
_SELECT_KEYS = ("kind", "technique", "pattern", "nm", "bits", "bits_below", "label")


def _positive_int(where: str, field: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SqueezerayError(f"{where}: {field}={value!r}: must be a positive integer")
    return value


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which options a rule acts on, tested on the parsed step; every key set must match.

    ``none`` is never selected.

    Attributes:
        kind: quantize / prune / lowrank.
        technique: Technique names (``rtn``, ``fp8``, ...).
        pattern: Sparsity pattern of a prune step (``nm``, ``unstructured``, ...).
        nm: ``"n:m"`` strings of an N:M prune step (``["2:4"]``).
        bits: Exact weight bits (see :func:`step_bits`).
        bits_below: Weight bits strictly below this.
        label: fnmatch globs over the option label (``gptq-w3*``).
    """

    kind: StepKind | None = None
    technique: tuple[str, ...] = ()
    pattern: SparsityPattern | None = None
    nm: tuple[str, ...] = ()
    bits: tuple[int, ...] = ()
    bits_below: int | None = None
    label: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = "rule select"
        if self.kind is not None:
            object.__setattr__(self, "kind", _enum(where, "kind", StepKind, self.kind))
        if self.pattern is not None:
            object.__setattr__(self, "pattern", _enum(where, "pattern", SparsityPattern, self.pattern))
        techniques = _globs(where, "technique", _as_tuple(self.technique)) if self.technique else ()
        for name in techniques:
            try:
                config_class(name)
            except SqueezerayError as err:
                raise SqueezerayError(f"{where}: technique {name!r}: {err}") from None
        object.__setattr__(self, "technique", techniques)
        nm = _globs(where, "nm", _as_tuple(self.nm)) if self.nm else ()
        for v in nm:
            n, _, m = v.partition(":")
            if not (n.isdigit() and m.isdigit()):
                raise SqueezerayError(f"{where}: nm={v!r}: write N:M, e.g. '2:4'")
        object.__setattr__(self, "nm", nm)
        object.__setattr__(self, "bits", tuple(_positive_int(where, "bits", b) for b in _as_tuple(self.bits)))
        if self.bits_below is not None:
            _positive_int(where, "bits_below", self.bits_below)
        object.__setattr__(self, "label", _globs(where, "label", _as_tuple(self.label)) if self.label else ())
        if all(getattr(self, f.name) in (None, ()) for f in dataclasses.fields(self)):
            raise SqueezerayError(f"{where}: give at least one of {', '.join(_SELECT_KEYS)} (it would select everything)")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Selector:
        where = f"{where}.select"
        _checked_mapping(data, _SELECT_KEYS, where)
        return _built(cls, data, where, "rule select: ")

    def matches(self, step: TechniqueConfig) -> bool:
        if self.kind is not None and step.kind is not self.kind:
            return False
        if self.technique and step.technique not in self.technique:
            return False
        is_prune = isinstance(step, PruneConfig)
        if self.pattern is not None and not (is_prune and step.pattern is self.pattern):  # type: ignore[union-attr]
            return False
        if self.nm:
            if not (is_prune and step.pattern is SparsityPattern.NM):  # type: ignore[union-attr]
                return False
            if f"{step.n}:{step.m}" not in self.nm:  # type: ignore[attr-defined]
                return False
        bits = step_bits(step)
        if self.bits and bits not in self.bits:
            return False
        if self.bits_below is not None and (bits is None or bits >= self.bits_below):
            return False
        if self.label and not any(fnmatch.fnmatchcase(step.label(), g) for g in self.label):
            return False
        return True


