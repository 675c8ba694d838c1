"""The study record: one module writes and reads the study's attributes, and what it writes reads back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray.objectives import Measurement
from squeezeray.objectives import Provenance
from squeezeray.search import TrialOutcome
from squeezeray.search import TrialResult
from squeezeray.search import _study
from squeezeray.search._study import StudyHeader
from squeezeray.search._study import TrialKey
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import preset_space

LAYERS = [f"model.layers.{b}.{p}" for b in range(2)
          for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                    "mlp.up_proj", "mlp.down_proj")]


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


# ------------------------------------------------------------------ trials
def _ask_sampled(
    study: optuna.Study, space: SearchSpace, params: dict | None = None, **attrs: object
) -> tuple[optuna.Trial, CompressionPlan]:
    """A trial asked with ``params`` queued (default: each parameter's last choice) and its plan sampled."""
    if params is None:
        params = {k: v[-1] for k, v in space.distributions(LAYERS).items()}
    study.enqueue_trial(params, user_attrs=dict(attrs) or None)
    trial = study.ask()
    return trial, space.sample(trial, LAYERS)


class _NoSpace:
    def plan_from_params(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a stored plan is read, not rebuilt from the parameters")


def test_a_trial_plan_is_stored_as_its_versioned_json_and_reads_back() -> None:
    space = preset_space("weights-int")
    study = _study_in_memory()
    trial, plan = _ask_sampled(study, space)
    _study.write_plan(trial, plan)
    study.tell(trial, [1.0, 2.0])
    t = study.trials[0]
    assert t.user_attrs[TrialKey.PLAN.value] == plan.to_dict() and t.user_attrs[TrialKey.PLAN.value]["_version"] == 1
    assert _study.plan_summary_of(t) == plan.summary()
    again = _study.plan_of(t, space=_NoSpace(), layer_names=LAYERS)  # type: ignore[arg-type]
    assert again == plan
    named = _study.plan_of(t, space=_NoSpace(), layer_names=LAYERS, name="s#0")  # type: ignore[arg-type]
    assert named.name == "s#0" and named.layers == plan.layers


def test_a_trial_from_before_plans_were_stored_is_rebuilt_from_its_parameters() -> None:
    space = preset_space("weights-int")
    study = _study_in_memory()
    trial, plan = _ask_sampled(study, space)
    trial.set_user_attr(TrialKey.PLAN_SUMMARY.value, plan.summary())  # what a study written before this stored
    study.tell(trial, [1.0, 2.0])
    t = study.trials[0]
    assert TrialKey.PLAN.value not in t.user_attrs
    legacy = _study.plan_of(t, space=space, layer_names=LAYERS, name="s#0")
    assert legacy.layers == plan.layers and legacy.name == "s#0"


def test_a_stored_plan_of_another_version_is_refused() -> None:
    space = preset_space("weights-int")
    study = _study_in_memory()
    trial, plan = _ask_sampled(study, space)
    trial.set_user_attr(TrialKey.PLAN.value, {**plan.to_dict(), "_version": 99})
    study.tell(trial, [1.0, 2.0])
    with pytest.raises(PlanError, match="version"):
        _study.plan_of(study.trials[0], space=space, layer_names=LAYERS)


def test_outcomes_read_back() -> None:
    space = preset_space("weights-int")
    study = _study_in_memory()
    ok, plan = _ask_sampled(study, space, **_study.baseline_attrs())
    result = TrialResult(trial=ok.number, outcome=TrialOutcome.OK, plan_summary=plan.summary(), measurements={})
    _study.mark_outcome(ok, TrialOutcome.OK, result=result)
    _study.write_plan_key(ok, "k0")
    study.tell(ok, [1.0, 2.0])
    bad, _ = _ask_sampled(study, space)
    _study.mark_outcome(bad, TrialOutcome.FAILED, error="boom", traceback="tb")
    study.tell(bad, state=optuna.trial.TrialState.FAIL)
    dup, _ = _ask_sampled(study, space)
    _study.mark_duplicate(dup, 0)
    study.tell(dup, [1.0, 2.0])
    flight, _ = _ask_sampled(study, space)
    _study.mark_duplicate(flight, None)
    study.tell(flight, state=optuna.trial.TrialState.FAIL)
    t_ok, t_bad, t_dup, t_flight = study.trials
    assert [_study.outcome_of(t) for t in study.trials] == [TrialOutcome.OK, TrialOutcome.FAILED, TrialOutcome.OK,
                                                            TrialOutcome.FAILED]
    assert _study.is_ok(t_ok) and _study.is_baseline(t_ok) and not _study.is_baseline(t_bad)
    assert TrialResult.from_dict(json.loads(t_ok.user_attrs[TrialKey.RESULT.value])) == result
    assert _study.plan_key_of(t_ok) == "k0" and _study.plan_key_of(t_bad) is None
    assert _study.error_of(t_bad) == "boom" and _study.error_of(t_ok) == ""
    assert [_study.is_duplicate(t) for t in study.trials] == [False, False, True, True]
    assert [_study.duplicate_of(t) for t in study.trials] == [None, None, 0, -1]
    assert _study.error_of(t_flight) == "duplicate of a plan still being measured"


def _m(name: str, value: float, **details: float) -> Measurement:
    return Measurement(name, value, "u", Provenance.COMPUTED, "here", details)


def test_the_front_table_has_a_row_per_re_measured_trial_in_the_order_given() -> None:
    space = preset_space("weights-int")
    study = _study_in_memory()
    for attrs in (_study.baseline_attrs(), {}):
        trial, plan = _ask_sampled(study, space, **attrs)
        _study.write_plan(trial, plan)
        study.tell(trial, [1.0, 2.0])
    empty = _study.front_table(study, {}, ["size", "kl"])
    assert empty.empty and list(empty.columns) == ["trial", "baseline", "size", "kl", "plan"]
    finals = {1: {"size": _m("size", 5.0), "kl": _m("kl", 0.1)}, 0: {"size": _m("size", 7.0), "kl": _m("kl", 0.2)}}
    front = _study.front_table(study, finals, ["size", "kl"])
    assert list(front.columns) == ["trial", "baseline", "size", "kl", "plan"]
    assert front["trial"].tolist() == [1, 0] and front["baseline"].tolist() == [False, True]
    assert front["size"].tolist() == [5.0, 7.0]
    label = _study.plan_label(study.trials[0])
    assert front["plan"].tolist()[1] == label and label.startswith(f"{len(LAYERS)}x ")
    paired = {0: {"size": _m("size", 7.0), "accuracy:arc": _m("accuracy:arc", 0.5, delta_vs_original=-0.1,
                                                                    delta_stderr=0.02)}}
    front = _study.front_table(study, paired, ["size", "accuracy:arc"])
    assert list(front.columns) == ["trial", "baseline", "size", "accuracy:arc", "delta:accuracy:arc",
                                   "delta_stderr:accuracy:arc", "plan"]
    assert front["delta:accuracy:arc"].tolist() == [-0.1] and front["delta_stderr:accuracy:arc"].tolist() == [0.02]


_TRIAL_KEYS = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(k.value) for k in TrialKey))
_ATTRS_DICT = re.compile(r"user_attrs\s*=\s*(?:dict\(|\{)[^)}]*", re.S)


def _spells_a_trial_key(text: str) -> bool:
    """A trial key written as a literal where user attributes are written or read (a line that names user_attr, or
    an ``enqueue_trial(..., user_attrs={...})`` dict however it is wrapped)."""
    parts = [line for line in text.splitlines() if "user_attr" in line]
    parts += [m.group(0) for m in _ATTRS_DICT.finditer(text)]
    return any(_TRIAL_KEYS.search(part) for part in parts)


def test_the_trial_key_check_finds_each_way_a_key_was_spelled() -> None:
    for spelled in ('trial.set_user_attr("outcome", "ok")', "t.user_attrs.get('plan_summary', {})",
                    'if "duplicate_of" in t.user_attrs:', 'storage.set_trial_user_attr(t._trial_id, "interrupted", 1)',
                    'study.enqueue_trial(p, user_attrs={\n    "solver_seed": True,\n})', 'user_attrs["baseline"]'):
        assert _spells_a_trial_key(spelled), spelled
    assert not _spells_a_trial_key('row = {"outcome": outcome.value}\nstudy.enqueue_trial(p, user_attrs=attrs())')


def test_no_other_module_spells_the_trial_keys() -> None:
    root = Path(_study.__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p != Path(_study.__file__).resolve() and _spells_a_trial_key(p.read_text())]
    assert offenders == []


def test_opening_a_storage_retries_only_the_schema_creation_race(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    import sqlalchemy.exc

    real = optuna.storages.RDBStorage
    calls = []

    def racing(url: str):  # noqa: ANN202 - the first open loses the CREATE TABLE race, as a second process would
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE trials", {}, Exception("table trials already exists"))
        return real(url)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = _study.open_storage(url)
    assert len(calls) == 2 and isinstance(storage, real)

    def locked(url: str):  # noqa: ANN202 - any other database error is the user's to see, at once
        calls.append(url)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", locked)
    calls.clear()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
        _study.open_storage(url)
    assert len(calls) == 1


def test_several_openers_of_one_new_storage_all_succeed(tmp_path) -> None:  # noqa: ANN001
    import concurrent.futures

    for i in range(4):
        url = f"sqlite:///{tmp_path / f'race{i}.db'}"
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            storages = list(pool.map(lambda _: _study.open_storage(url), range(6)))
        assert len(storages) == 6
