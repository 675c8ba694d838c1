"""The study record: what a search writes on its Optuna study beside the trials, written and read here only.

The search driver writes a :class:`StudyHeader` when a study starts, the original's final-objective
measurements once (:func:`write_baseline_final`) and each re-measured trial's (:func:`write_final`);
``--resume``, export and the UI read them back through :meth:`StudyHeader.read`, :func:`read_baseline_final`
and :func:`read_finals`. No other module spells these attribute keys.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import optuna

from squeezeray._errors import SqueezerayError

_REQUIRED = ("objectives", "space", "model", "model_fingerprint", "calibration", "hardware", "seed")
_OPTIONAL = ("dtype", "data", "memory_estimate")
_BASELINE_FINAL = "baseline_final"
_FINAL = "final:"  # + trial number
_STOPPED = "stopped"
LEGACY_DTYPE = "float32"
"""The dtype of a study recorded before studies recorded one: models loaded in float32 then."""


@dataclasses.dataclass(frozen=True)
class StudyHeader:
    """What a search records about itself when its study starts.

    Attributes:
        objectives: Search-stage objective names, in the study's direction order.
        space: The space searched (after the expert rules), as ``SearchSpace.to_dict()``.
        model: The model reference the search loaded.
        model_fingerprint: SHA-256 of its weights as loaded (dtype included).
        calibration: Description of the calibration tokens (sources and digests).
        hardware: The hardware profile.
        seed: The sampler's seed.
        dtype: The dtype the weights were held in.
        data: The data record (config and each token set's source and digest), when recorded.
        memory_estimate: The pre-load memory estimate (``Footprint.to_dict()``), when one was made.
    """

    objectives: tuple[str, ...]
    space: Mapping[str, Any]
    model: str
    model_fingerprint: str
    calibration: str
    hardware: str
    seed: int
    dtype: str = LEGACY_DTYPE
    data: Mapping[str, Any] | None = None
    memory_estimate: Mapping[str, Any] | None = None

    def write(self, study: optuna.Study) -> None:
        for key, value in self.to_dict().items():
            if value is not None:
                study.set_user_attr(key, value)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["objectives"] = list(self.objectives)
        return out

    @classmethod
    def read(cls, study: optuna.Study) -> StudyHeader:
        """The header of ``study``.

        Raises:
            SqueezerayError: the study lacks a required record (not a squeezeray search).
        """
        attrs = study.user_attrs
        missing = [k for k in _REQUIRED if k not in attrs]
        if missing:
            raise SqueezerayError(f"study {study.study_name!r}: not a squeezeray search (no {', '.join(missing)})")
        values = {k: attrs[k] for k in (*_REQUIRED, *_OPTIONAL) if k in attrs}
        values["objectives"] = tuple(values["objectives"])
        return cls(**values)


def write_baseline_final(study: optuna.Study, measurements: Mapping[str, Mapping[str, Any]]) -> None:
    """The original model's final-objective measurements (``Measurement.to_dict()`` by result key)."""
    study.set_user_attr(_BASELINE_FINAL, dict(measurements))


def read_baseline_final(study: optuna.Study) -> dict[str, Mapping[str, Any]] | None:
    """What :func:`write_baseline_final` wrote, or None before the front was first re-measured."""
    value = study.user_attrs.get(_BASELINE_FINAL)
    return None if value is None else dict(value)


def write_final(study: optuna.Study, number: int, measurements: Mapping[str, Mapping[str, Any]]) -> None:
    """Trial ``number``'s final-objective measurements (finished trials are immutable in Optuna, so they live on
    the study)."""
    study.set_user_attr(f"{_FINAL}{number}", json.dumps(dict(measurements)))


def read_final(study: optuna.Study, number: int) -> dict[str, Mapping[str, Any]] | None:
    value = study.user_attrs.get(f"{_FINAL}{number}")
    return None if not value else json.loads(value)


def read_finals(study: optuna.Study) -> dict[int, dict[str, Mapping[str, Any]]]:
    """Every re-measured trial's final-objective measurements, by trial number (ascending)."""
    out = {int(k[len(_FINAL):]): json.loads(v) for k, v in study.user_attrs.items() if k.startswith(_FINAL) and v}
    return dict(sorted(out.items()))


def write_stopped(study: optuna.Study, why: str) -> None:
    """Why the search loop stopped before its trial budget."""
    study.set_user_attr(_STOPPED, why)
