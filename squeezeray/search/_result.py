"""The record of one evaluated trial."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from squeezeray._schema import check_header
from squeezeray.objectives import Measurement

RESULT_TYPE = "squeezeray.TrialResult"
RESULT_VERSION = 1


class TrialOutcome(str, enum.Enum):
    OK = "ok"  # measured
    INFEASIBLE = "infeasible"  # the configuration cannot exist (told worst-case values + a violated constraint)
    FAILED = "failed"  # crashed; recorded with its error, the study went on


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """What one trial produced.

    Attributes:
        trial: Optuna trial number.
        outcome: ok / infeasible / failed.
        plan_summary: Step label -> number of layers.
        measurements: Objective name -> Measurement (search stage and, when re-measured, full stage).
        stage: 1 = cheap proxy only; 2 = re-measured on the full objectives.
        error: Why it is infeasible or failed.
        wall_s: Seconds the evaluation took.
        cache_hits, cache_misses: Compressed-layer cache use in this trial.
    """

    trial: int
    outcome: TrialOutcome
    plan_summary: Mapping[str, int]
    measurements: Mapping[str, Measurement]
    stage: int = 1
    error: str = ""
    wall_s: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    version: int = RESULT_VERSION

    def value(self, name: str) -> float:
        return self.measurements[name].value

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": RESULT_TYPE, "_version": self.version, "trial": self.trial, "outcome": self.outcome.value,
            "plan_summary": dict(self.plan_summary),
            "measurements": {k: m.to_dict() for k, m in self.measurements.items()},
            "stage": self.stage, "error": self.error, "wall_s": self.wall_s,
            "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        # records written before the header had a _type have only _version: a missing _type is accepted
        check_header({"_type": RESULT_TYPE, **d}, type_=RESULT_TYPE, version=RESULT_VERSION, where="trial result",
                     error=ValueError)
        return cls(
            trial=int(d["trial"]), outcome=TrialOutcome(d["outcome"]), plan_summary=dict(d["plan_summary"]),
            measurements={k: Measurement.from_dict(m) for k, m in d["measurements"].items()},
            stage=int(d["stage"]), error=str(d["error"]), wall_s=float(d["wall_s"]),
            cache_hits=int(d["cache_hits"]), cache_misses=int(d["cache_misses"]),
        )
