"""The study record: one module writes and reads the study's attributes, and what it writes reads back."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.search import _study
from squeezeray.search._study import StudyHeader


def _study_in_memory() -> optuna.Study:
    return optuna.create_study(directions=["minimize", "minimize"], storage=optuna.storages.InMemoryStorage())


def _header(**over: object) -> StudyHeader:
    values: dict = dict(objectives=("size", "kl"), space={"name": "s", "groups": []}, model="smollm2",
                        model_fingerprint="ab" * 32, calibration="boolq 32x256 sha256:00", hardware="host", seed=3,
                        dtype="bfloat16", data={"config": {"calib_seqs": 32}}, memory_estimate={"peak": 1})
    values.update(over)
    return StudyHeader(**values)


def test_the_header_reads_back_what_was_written() -> None:
    study = _study_in_memory()
    _header().write(study)
    assert StudyHeader.read(study) == _header()
    bare = _study_in_memory()
    _header(data=None, memory_estimate=None).write(bare)
    assert "data" not in bare.user_attrs and StudyHeader.read(bare).data is None


def test_a_study_from_before_the_dtype_was_recorded_reads_as_float32() -> None:
    study = _study_in_memory()
    _header().write(study)
    legacy = _study_in_memory()
    for k, v in study.user_attrs.items():
        if k != "dtype":
            legacy.set_user_attr(k, v)
    assert StudyHeader.read(legacy).dtype == "float32"  # models loaded in float32 before studies said so


def test_a_study_that_is_not_a_search_is_refused_naming_what_is_missing() -> None:
    study = _study_in_memory()
    study.set_user_attr("model", "x")
    with pytest.raises(SqueezerayError, match=r"not a squeezeray search \(no objectives, space, model_fingerprint"):
        StudyHeader.read(study)


def test_final_measurements_read_back_by_trial() -> None:
    study = _study_in_memory()
    assert _study.read_baseline_final(study) is None and _study.read_finals(study) == {}
    _study.write_baseline_final(study, {"kl": {"value": 0.0}})
    _study.write_final(study, 12, {"kl": {"value": 0.5}})
    _study.write_final(study, 3, {"kl": {"value": 0.2}})
    assert _study.read_baseline_final(study) == {"kl": {"value": 0.0}}
    assert list(_study.read_finals(study)) == [3, 12] and _study.read_final(study, 12) == {"kl": {"value": 0.5}}
    assert _study.read_final(study, 4) is None


def test_no_other_module_spells_the_study_keys() -> None:
    keys = (*_study._REQUIRED, *_study._OPTIONAL, _study._BASELINE_FINAL, _study._STOPPED)
    pattern = re.compile(r"""(set_user_attr\(|user_attrs\.get\(|user_attrs\[)\s*f?["'](%s|final:)""" % "|".join(keys))
    root = Path(_study.__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p != Path(_study.__file__).resolve() and pattern.search(p.read_text())]
    assert offenders == []
