"""Reading a finished search back from its Optuna storage (for export, the UI and the report)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import optuna
import pandas as pd

from squeezeray._errors import SqueezerayError
from squeezeray.objectives import Measurement
from squeezeray.search import Selection
from squeezeray.search import select_front
from squeezeray.search._study import StudyHeader
from squeezeray.search._study import front_table
from squeezeray.search._study import is_ok
from squeezeray.search._study import open_storage
from squeezeray.search._study import outcome_of
from squeezeray.search._study import plan_of
from squeezeray.search._study import read_baseline_final
from squeezeray.search._study import read_finals
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import SearchSpace



def storage_url(ref: str | Path) -> str:
    """``ref`` as an RDB URL: a URL as is, a ``.db`` file, or a study folder holding ``study.db``."""
    text = str(ref)
    if "://" in text:
        return text
    p = Path(text).expanduser()
    if p.is_dir():
        p = p / "study.db"
    if not p.is_file():
        raise SqueezerayError(
            f"study={text!r}: no such study database (give a study folder with study.db, a .db file or an RDB URL)"
        )
    return f"sqlite:///{p.resolve()}"


def open_study(ref: str | Path, study_name: str | None = None) -> optuna.Study:
    """Load a study from ``ref`` (see :func:`storage_url`); ``study_name`` is needed when it holds several."""
    url = storage_url(ref)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if study_name is None:
        if len(names) != 1:
            raise SqueezerayError(
                f"study={str(ref)!r}: holds {len(names)} studies ({', '.join(names) or 'none'}); pass --study-name"
            )
        study_name = names[0]
    elif study_name not in names:
        raise SqueezerayError(f"study_name={study_name!r}: not in {url}; it holds {', '.join(names) or 'no studies'}")
    return optuna.load_study(study_name=study_name, storage=storage)


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """What a finished search stored, read once.

    Attributes:
        study: The Optuna study.
        space: The space searched (after the expert rules).
        objectives: Search-stage objectives.
        final_objectives: Objectives the front was re-measured on.
        baseline: The original model's final-objective measurements.
        finals: Trial number -> its final-objective measurements (re-measured trials only).
        header: What the search recorded about itself (model, fingerprint, dtype, calibration, data, hardware, seed).
    """

    study: optuna.Study
    space: SearchSpace
    objectives: tuple[str, ...]
    final_objectives: tuple[str, ...]
    baseline: Mapping[str, Measurement]
    finals: Mapping[int, Mapping[str, Measurement]]
    header: StudyHeader

    @classmethod
    def read(cls, study: optuna.Study) -> StudyRecord:
        """Read ``study``; raise if it lacks the search's records or was never re-measured."""
        header = StudyHeader.read(study)
        recorded = read_baseline_final(study)
        if recorded is None:
            raise SqueezerayError(
                f"study {study.study_name!r}: has no re-measured front yet (baseline_final missing); "
                "finish the search (squeezeray search --resume) first"
            )
        baseline = {k: Measurement.from_dict(v) for k, v in recorded.items()}
        names = tuple(baseline)
        finals = {  # a trial re-measured under another set of final objectives (resumed with a change) is left out
            number: MappingProxyType({k: Measurement.from_dict(data[k]) for k in names})
            for number, data in read_finals(study).items() if set(data) == set(names)
        }
        return cls(
            study=study,
            space=SearchSpace.from_dict(dict(header.space)),
            objectives=header.objectives,
            final_objectives=names,
            baseline=MappingProxyType(baseline),
            finals=MappingProxyType(finals),
            header=header,
        )

    @property
    def name(self) -> str:
        return self.study.study_name

    def storage_url(self) -> str:
        """The study's RDB URL (password hidden), or the storage class for a non-RDB storage."""
        storage = self.study._storage
        storage = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
        engine = getattr(storage, "engine", None)
        if engine is None:
            return type(storage).__name__
        return engine.url.render_as_string(hide_password=True)

    def front(self) -> pd.DataFrame:
        """One row per re-measured trial, by trial number: ``trial``, ``baseline`` (a uniform baseline trial), the
        final objectives, ``plan`` (summary); the same table as ``SearchResult.front`` without ``pareto``
        (:func:`~squeezeray.search._study.front_table` builds both)."""
        return front_table(self.study, self.finals, self.final_objectives)

    def select(
        self, constraints: Mapping[str, float] | None = None, weights: Mapping[str, float] | None = None,
    ) -> Selection:
        """The selector's pick among the re-measured trials (what ``squeezeray search`` runs on its front).

        Raises:
            SqueezerayError: bad constraints or weights, or no trial meets the constraints (the reason says why).
        """
        return select_front(self.front(), {k: float(m.value) for k, m in self.baseline.items()}, constraints, weights)

    def plan(self, trial: int, layer_names: Sequence[str]) -> CompressionPlan:
        """The plan of a completed trial, for a model with these compressible layers."""
        trials = self.study.get_trials(deepcopy=False)
        if not isinstance(trial, int) or isinstance(trial, bool) or not 0 <= trial < len(trials):
            raise SqueezerayError(f"trial={trial!r}: study {self.name!r} has trials 0..{len(trials) - 1}")
        t = trials[trial]
        if t.state is not optuna.trial.TrialState.COMPLETE or not is_ok(t):
            outcome = outcome_of(t)
            raise SqueezerayError(
                f"trial={trial}: is {t.state.name.lower()} ({'no outcome' if outcome is None else outcome.value}); "
                "only measured trials can be exported"
            )
        return plan_of(t, space=self.space, layer_names=tuple(layer_names), name=f"{self.name}#{trial}")

    def check_bench(self, bench: Any) -> None:
        """Raise unless ``bench`` holds the model and calibration data the search used."""
        if bench.loaded.fingerprint() != self.header.model_fingerprint:
            raise SqueezerayError(
                f"model: {bench.loaded.source.ref!r} is not the model study {self.name!r} searched "
                f"({self.header.model!r}; weight fingerprints differ)"
            )
        if bench.calibration.source != self.header.calibration:
            raise SqueezerayError(
                f"calibration: the study used {self.header.calibration!r}, this workbench has "
                f"{bench.calibration.source!r}; pass the same data options (--calib-data, --calib-seqs, --calib-len, --seed) as the search"
            )
