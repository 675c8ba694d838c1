"""The model card: what a compressed model is, where it came from, how it was measured, who approved it.

A card is written as ``card.json`` (the record; validated on load) and ``card.md``
(the same, for people). Serialised as ``{"_type": "squeezeray.ModelCard",
"_version": 1, ...}``; every field below is required (``search`` may be null for a
plan exported without a search, ``approvals`` may be empty).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from collections.abc import Mapping
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_header
from squeezeray.objectives import Provenance


CARD_TYPE = "squeezeray.ModelCard"


CARD_VERSION = 1


class CardError(SqueezerayError):
    """A model card is malformed or misses a required field."""


class MeasuredOn(str, enum.Enum):
    """Which model an objective value was measured on."""

    EXPORT = "export"  # the exported files, reloaded with squeezeray.load, at export time
    SEARCH = "search"  # the search's re-measurement of the trial (same plan, in memory, original dtype)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Reader:
    """Reads one JSON object; every miss names the dotted field."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise CardError(f"card.json: {where or 'card'} must be an object, got {type(data).__name__}")
        self.data = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], *, nullable: bool = False) -> Any:
        if key not in self.data:
            raise CardError(f"card.json: missing required field {self._name(key)!r}")
        value = self.data[key]
        if value is None and nullable:
            return None
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
        if not ok:
            want = " or ".join(t.__name__ for t in _as_tuple(types))
            raise CardError(f"card.json: {self._name(key)}={_short(value)}: must be {want}")
        if isinstance(value, str) and not value.strip() and not nullable:
            raise CardError(f"card.json: {self._name(key)} must not be empty")
        return value

    def obj(self, key: str, *, nullable: bool = False) -> _Reader | None:
        value = self.get(key, dict, nullable=nullable)
        return None if value is None else _Reader(value, self._name(key))

    def number(self, key: str, *, nullable: bool = False) -> float | None:
        value = self.get(key, (int, float), nullable=nullable)
        if value is None:
            return None
        if not math.isfinite(float(value)):
            raise CardError(f"card.json: {self._name(key)}={value!r}: must be a finite number")
        return float(value)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclasses.dataclass(frozen=True)
class SourceModel:
    """The uncompressed model.

    Attributes:
        ref: What it was loaded from (``smollm2``, a folder, a hub id).
        fingerprint: SHA-256 over its parameter names, shapes and bytes
            (:func:`squeezeray.models.model_fingerprint`).
        architecture: transformers class name.
        parameters: Number of parameters.
    """

    ref: str
    fingerprint: str
    architecture: str
    parameters: int

    @classmethod
    def read(cls, r: _Reader) -> SourceModel:
        fp = r.get("fingerprint", str)
        if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
            raise CardError(f"card.json: source.fingerprint={_short(fp)}: must be a SHA-256 hex digest")
        return cls(r.get("ref", str), fp, r.get("architecture", str), int(r.get("parameters", int)))


@dataclasses.dataclass(frozen=True)
class ObjectiveRecord:
    """One objective of the compressed model, beside the original's.

    Attributes:
        name, value, unit, provenance, where, details: As :class:`~squeezeray.objectives.Measurement`.
        baseline: The original model's value measured the same way (None if not measured).
        measured_on: export (on the exported files) or search (the search's in-memory re-measurement).
    """

    name: str
    value: float
    unit: str
    provenance: Provenance
    where: str
    details: Mapping[str, Any]
    baseline: float | None
    measured_on: MeasuredOn

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value, "unit": self.unit, "provenance": self.provenance.value,
            "where": self.where, "details": dict(self.details), "baseline": self.baseline,
            "measured_on": self.measured_on.value,
        }

    @classmethod
    def read(cls, r: _Reader) -> ObjectiveRecord:
        prov = r.get("provenance", str)
        on = r.get("measured_on", str)
        try:
            provenance = Provenance(prov)
        except ValueError:
            raise CardError(f"card.json: {r.where}.provenance={prov!r}: must be measured, predicted or computed") from None
        try:
            measured_on = MeasuredOn(on)
        except ValueError:
            raise CardError(f"card.json: {r.where}.measured_on={on!r}: must be export or search") from None
        value = r.number("value")
        assert value is not None
        return cls(
            r.get("name", str), value, r.get("unit", str), provenance, r.get("where", str),
            dict(r.get("details", dict)), r.number("baseline", nullable=True), measured_on,
        )


@dataclasses.dataclass(frozen=True)
class DataRecord:
    """One token set: what it is, its content hash and shape."""

    source: str
    digest: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "digest": self.digest, "shape": list(self.shape)}

    @classmethod
    def read(cls, r: _Reader) -> DataRecord:
        shape = r.get("shape", list)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise CardError(f"card.json: {r.where}.shape={shape!r}: must list positive integers")
        return cls(r.get("source", str), r.get("digest", str), tuple(shape))


@dataclasses.dataclass(frozen=True)
class SearchRecord:
    """The search that found the plan.

    Attributes:
        study: Optuna study name.
        storage: Its RDB URL.
        trial: Trial number.
        seed: Sampler seed.
        objectives: Search-stage objectives (what the sampler optimised).
        final_objectives: Objectives the front was re-measured on.
        space: Search space name.
        n_trials: Finished trials in the study at export.
        selection: Why this trial (the selector's reason), or "" when a user picked it.
        constraints: Constraints the selection ran under.
    """

    study: str
    storage: str
    trial: int
    seed: int
    objectives: tuple[str, ...]
    final_objectives: tuple[str, ...]
    space: str
    n_trials: int
    selection: str
    constraints: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        d["final_objectives"] = list(self.final_objectives)
        d["constraints"] = dict(self.constraints)
        return d

    @classmethod
    def read(cls, r: _Reader) -> SearchRecord:
        selection = r.get("selection", str, nullable=True) or ""
        return cls(
            r.get("study", str), r.get("storage", str), int(r.get("trial", int)), int(r.get("seed", int)),
            tuple(r.get("objectives", list)), tuple(r.get("final_objectives", list)), r.get("space", str),
            int(r.get("n_trials", int)), selection, dict(r.get("constraints", dict)),
        )


@dataclasses.dataclass(frozen=True)
class Approval:
    """One sign-off, bound to the weights it saw.

    Attributes:
        by: Who approved.
        note: What they checked / why.
        at: UTC timestamp (ISO 8601).
        model_sha256: SHA-256 of ``model.safetensors`` when it was approved.
    """

    by: str
    note: str
    at: str
    model_sha256: str

    def __post_init__(self) -> None:
        for field in ("by", "note"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise SqueezerayError(f"approval {field}={value!r}: must be a non-empty string")

    @classmethod
    def read(cls, r: _Reader) -> Approval:
        return cls(r.get("by", str), r.get("note", str), r.get("at", str), r.get("model_sha256", str))


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """The record of one exported model.

    Attributes:
        name: Model name (the export folder's name by default).
        created: UTC timestamp of the export.
        squeezeray_version: Version that wrote it.
        source: The original model and its hash.
        plan: The :class:`~squeezeray.spaces.CompressionPlan` as JSON.
        hardware: ``{"ref": ..., "profile": HardwareProfile.to_dict(), "note": ...}``.
        objectives: Every objective, with how it was measured and the original's value.
        evaluation: The token sets used: held_out (perplexity), proxy (KL), calibration.
        artifact: What the files hold (format, version, dense dtype, bytes, compressed layers).
        search: The search that found the plan, or None.
        approvals: Sign-offs, oldest first.
        version: Card schema version.
    """

    name: str
    created: str
    squeezeray_version: str
    source: SourceModel
    plan: Mapping[str, Any]
    hardware: Mapping[str, Any]
    objectives: tuple[ObjectiveRecord, ...]
    evaluation: Mapping[str, DataRecord]
    artifact: Mapping[str, Any]
    search: SearchRecord | None
    approvals: tuple[Approval, ...] = ()
    version: int = CARD_VERSION

    def objective(self, name: str) -> ObjectiveRecord:
        for o in self.objectives:
            if o.name == name:
                return o
        raise SqueezerayError(f"card: no objective {name!r}; it has {', '.join(o.name for o in self.objectives)}")

    def with_approval(self, approval: Approval) -> ModelCard:
        return dataclasses.replace(self, approvals=(*self.approvals, approval))

    # ------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": CARD_TYPE,
            "_version": self.version,
            "name": self.name,
            "created": self.created,
            "squeezeray_version": self.squeezeray_version,
            "source": dataclasses.asdict(self.source),
            "plan": dict(self.plan),
            "hardware": dict(self.hardware),
            "objectives": [o.to_dict() for o in self.objectives],
            "evaluation": {k: v.to_dict() for k, v in self.evaluation.items()},
            "artifact": dict(self.artifact),
            "search": None if self.search is None else self.search.to_dict(),
            "approvals": [dataclasses.asdict(a) for a in self.approvals],
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """Validate a parsed ``card.json``.

        Raises:
            CardError: Wrong type tag or version, a missing required field, or a field of
                the wrong type; the message names the dotted field.
        """
        from squeezeray.spaces import CompressionPlan

        r = _Reader(data, "")
        check_header(data, type_=CARD_TYPE, version=CARD_VERSION, where="card.json", error=CardError)
        source = r.obj("source")
        assert source is not None
        plan = r.get("plan", dict)
        try:
            CompressionPlan.from_dict(plan)
        except SqueezerayError as err:
            raise CardError(f"card.json: plan: {err}") from None
        hardware = r.obj("hardware")
        assert hardware is not None
        hardware.get("ref", str)
        hardware.get("profile", dict, nullable=True)
        objectives = r.get("objectives", list)
        if not objectives:
            raise CardError("card.json: objectives must list at least one objective")
        records = tuple(ObjectiveRecord.read(_Reader(o, f"objectives[{i}]")) for i, o in enumerate(objectives))
        evaluation = r.obj("evaluation")
        assert evaluation is not None
        evals = {}
        for key in ("held_out", "proxy", "calibration"):
            sub = evaluation.obj(key)
            assert sub is not None
            evals[key] = DataRecord.read(sub)
        artifact = r.obj("artifact")
        assert artifact is not None
        for key in ("format", "dense_dtype"):
            artifact.get(key, str)
        artifact.get("format_version", int)
        search = r.obj("search", nullable=True)
        approvals = r.get("approvals", list)
        return cls(
            name=r.get("name", str),
            created=r.get("created", str),
            squeezeray_version=r.get("squeezeray_version", str),
            source=SourceModel.read(source),
            plan=plan,
            hardware=dict(hardware.data),
            objectives=records,
            evaluation=evals,
            artifact=dict(artifact.data),
            search=None if search is None else SearchRecord.read(search),
            approvals=tuple(Approval.read(_Reader(a, f"approvals[{i}]")) for i, a in enumerate(approvals)),
        )

    @classmethod
    def from_json(cls, text: str, *, origin: str = "card.json") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CardError(f"{origin}: not valid JSON ({err})") from None
        return cls.from_dict(data)
