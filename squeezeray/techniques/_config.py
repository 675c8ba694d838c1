"""Technique configurations: one frozen dataclass per technique.

A config is pure data. It validates its own fields in ``__post_init__`` and its
fit to a layer's shape in :meth:`TechniqueConfig.check_shape`; it serialises to
a dict tagged with the technique's name (``{"technique": "gptq", "bits": 4, ...}``).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any
from typing import ClassVar
from typing import TypeVar

from squeezeray._errors import PlanError

C = TypeVar("C", bound="TechniqueConfig")


class StepKind(str, enum.Enum):
    """What a step does to a layer; a layer takes at most one step of each kind."""

    QUANTIZE = "quantize"
    PRUNE = "prune"
    LOWRANK = "lowrank"


@dataclasses.dataclass(frozen=True)
class TechniqueConfig:
    """Base of every technique's settings.

    Subclasses set ``technique`` (the registry name) and ``kind``, declare their
    fields with defaults, and check them in ``__post_init__`` by calling
    ``super().__post_init__()`` first.
    """

    technique: ClassVar[str] = ""
    kind: ClassVar[StepKind]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            # Enums arrive as strings from JSON; coerce so "nm" round-trips.
            ftype = hints.get(field.name)
            if isinstance(ftype, type) and issubclass(ftype, enum.Enum) and not isinstance(value, ftype):
                try:
                    object.__setattr__(self, field.name, ftype(value))
                except ValueError:
                    allowed = ", ".join(repr(m.value) for m in ftype)
                    self._fail(field.name, value, f"must be one of {allowed}")

    def _fail(self, field: str, value: object, why: str) -> None:
        raise PlanError(f"{self.technique}.{field}={value!r}: {why}")

    def check_shape(self, out_features: int, in_features: int) -> None:
        """Raise :class:`PlanError` if this config cannot apply to an (out, in) weight."""

    def label(self) -> str:
        """A short human-readable label, e.g. ``gptq-w4g128``."""
        return self.technique

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"technique": self.technique}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            data[field.name] = value.value if isinstance(value, enum.Enum) else value
        return data

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"technique"})
        if unknown:
            raise PlanError(
                f"{cls.technique}: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(sorted(names))}"
            )
        kwargs = {k: v for k, v in data.items() if k != "technique"}
        if kwargs.get("group_size") is not None and isinstance(kwargs["group_size"], float):
            kwargs["group_size"] = int(kwargs["group_size"])
        return cls(**kwargs)


def check_int_choice(cfg: TechniqueConfig, field: str, value: object, allowed: tuple[int, ...]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        cfg._fail(field, value, f"must be one of {', '.join(map(str, allowed))}")


def check_group_size(cfg: TechniqueConfig, group_size: int | None) -> None:
    if group_size is None:
        return
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 2:
        cfg._fail("group_size", group_size, "must be an integer >= 2, or null for one group per row")


def check_group_divides(cfg: TechniqueConfig, group_size: int | None, in_features: int) -> None:
    """A group may not exceed the input width; a group size that does not divide it leaves a
    shorter last group (as GPTQ's ``g_idx = i // group_size`` layout does)."""
    if group_size is not None and group_size > in_features:
        cfg._fail("group_size", group_size, f"exceeds the layer's input width {in_features}")


def check_fraction(cfg: TechniqueConfig, field: str, value: object, *, upper_inclusive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = 0.0 <= float(value) <= 1.0 if upper_inclusive else 0.0 <= float(value) < 1.0
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        cfg._fail(field, value, f"must be a number in {bound}")
