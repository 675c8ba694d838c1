"""The evo search end to end on a tiny model: seeds, ties, dedupe, sensitivity reused on resume."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from squeezeray.search._evo import EvoConfig
from squeezeray.search._sensitivity import SensitivityProbe
from squeezeray.spaces import GroupSpec
from squeezeray.spaces._presets import PER_LAYER_QUANT
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import Tie
from tests._tiny import TINY_DATA


def _cfg(tmp_path: Path, **kw) -> SearchConfig:  # noqa: ANN003
    base = dict(space="per-layer", n_trials=22, sampler="evo", seed=0, data=TINY_DATA, workdir=tmp_path,
                final_objectives=("size", "kl"), rerank=3)
    base.update(kw)
    return SearchConfig(**base)


def test_evo_search_seeds_the_solver_front_and_refines(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    evo = EvoConfig(screen=4)  # mutations screened on the sensitivity proxy (the swapped-in-place model)
    result = run_search(_cfg(tmp_path, evo=evo), bench=tiny, progress=False)
    study = result.study
    trials = study.get_trials()
    seeds = [t for t in trials if t.user_attrs.get("solver_seed")]
    assert 2 <= len(seeds) <= 8
    proposed = [t for t in trials if not t.user_attrs.get("solver_seed") and not t.user_attrs.get("baseline")]
    assert proposed, "the sampler proposed nothing of its own"
    keys = [t.user_attrs["plan_key"] for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(keys) == len(set(keys)), "a plan was measured twice"
    for t in seeds + proposed:  # tied units (q/k/v, gate/up) keep one choice
        plan = result.plan(t.number)
        for block in range(2):
            qkv = {plan.layers[f"model.layers.{block}.self_attn.{p}_proj"].label() for p in "qkv"}
            gu = {plan.layers[f"model.layers.{block}.mlp.{p}_proj"].label() for p in ("gate", "up")}
            assert len(qkv) == 1 and len(gu) == 1
    # 8 block units x the space's options, and the token table's unit with the options the 8-bit floor leaves
    # (rtn-w8, none)
    assert result.sensitivity is not None and len(result.sensitivity) == 8 * len(PER_LAYER_QUANT) + 2
    assert result.solver_front is not None and result.solver_front["predicted_kl"].is_monotonic_decreasing

    # the page and the report draw the table as a per-layer heat map
    from squeezeray.export._study import StudyRecord
    from squeezeray.ui._data import front_payload

    heat = front_payload(StudyRecord.read(study))["sensitivity"]
    assert heat["units"][0].startswith("attn_qkv@model.layers.0") and heat["units"][-1] == "head@lm_head"
    n_options = len(PER_LAYER_QUANT) + 1  # and the token table's "none"
    assert len(heat["units"]) == 9 and len(heat["options"]) == n_options and all(len(row) == n_options for row in heat["kl"])
    assert all(v is not None and v >= 0 for row in heat["kl"][:-1] for v, o in zip(row, heat["options"]) if o != "none")

    # resume: the sensitivity rows come from the study, no unit is measured again (a sensitivity
    # measurement replaces one unit's layers, at most 3; the evo screen replaces every unit's)
    calls: list[int] = []
    kl_many = SensitivityProbe.kl_many
    monkeypatch.setattr(SensitivityProbe, "kl_many", lambda self, cands: calls.append(len(cands[0])) or kl_many(self, cands))
    again = run_search(_cfg(tmp_path, n_trials=26, evo=evo), bench=tiny, resume=True, progress=False)
    assert calls and min(calls) > 3, f"layers replaced per measurement: {calls}"
    assert again.sensitivity.equals(result.sensitivity)
    assert len([t for t in again.study.get_trials() if t.state is optuna.trial.TrialState.COMPLETE]) >= 26


def test_evo_needs_size_and_kl() -> None:
    with pytest.raises(SqueezerayError, match="sampler='evo' needs the objectives size and kl"):
        SearchConfig(sampler="evo", objectives=("size", "perplexity"))


def test_a_sampler_repeating_plans_is_stopped_not_looped(tiny, tmp_path) -> None:  # noqa: ANN001
    space = SearchSpace("two", (GroupSpec("all", ("model.layers.*",), quantize=("rtn-w8", "gptq-w4g128"), tie=Tie.ALL),))
    result = run_search(_cfg(tmp_path, space=space, sampler="random", n_trials=6), bench=tiny, progress=False)
    ok = result.trials[result.trials["duplicate_of"].isna()]
    assert len(ok) == 2  # only two distinct plans exist; each was measured once
    assert "stopped" in result.study.user_attrs
    assert any("already measured" in n for n in result.rule_notes)


def test_a_predicted_latency_budget_holds_for_every_seed_and_proposal(tiny, tmp_path) -> None:  # noqa: ANN001
    from squeezeray.compress import compress_layer
    from squeezeray.objectives.predicted_latency import PredictedLatency
    from squeezeray.search._sensitivity import unit_options
    from squeezeray.search._unit_latency import unit_latencies
    from squeezeray.spaces import preset_space

    profile = "xeon-8480plus"  # a CPU profile: int4 / int8 kernels per format, nothing measured here
    predictor = PredictedLatency(profile=profile)
    names = [n for n, m in tiny.original.named_modules() if isinstance(m, torch.nn.Linear)]
    units = preset_space("per-layer").units(names)
    options = [unit_options(u.group) for u in units]
    lat, fixed = unit_latencies(tiny.original, units, options, compress_layer, tiny.stats(hessian=True), predictor)
    # the plans the search can hold: block units free, the token table at RTN 8-bit (the expert rules' floor;
    # left dense it alone would outweigh every block)
    head = [i for i, u in enumerate(units) if u.key.startswith("head@")]
    w8 = fixed + sum(lat[i][[o.label for o in options[i]].index("rtn-w8")] for i in head)
    blocks = [r for i, r in enumerate(lat) if i not in head]
    fastest, slowest = w8 + sum(min(r) for r in blocks), w8 + sum(max(r) for r in blocks)
    budget_ms = 1000 * (fastest + 0.5 * (slowest - fastest))
    evo = EvoConfig(max_predicted_latency_ms=budget_ms)
    result = run_search(_cfg(tmp_path, hardware=profile, evo=evo, objectives=("size", "kl", "predicted_latency"),
                             n_trials=20), bench=tiny, progress=False)
    trials = [t for t in result.study.get_trials() if t.state is optuna.trial.TrialState.COMPLETE]
    searched = [t for t in trials if not t.user_attrs.get("baseline")]
    baselines = [t for t in trials if t.user_attrs.get("baseline")]
    assert any(t.user_attrs.get("solver_seed") for t in searched) and len(searched) >= 8
    # the roofline of the whole candidate (the objective) agrees with the additive per-unit prediction
    assert all(t.values[2] <= budget_ms * (1 + 1e-6) for t in searched), [t.values[2] for t in searched]
    assert any(t.values[2] > budget_ms for t in baselines)  # the budget binds: uniform 5- and 8-bit miss it
    front = result.solver_front
    assert front is not None and (front["predicted_latency_ms"] <= budget_ms * (1 + 1e-9)).all()
    with pytest.raises(SqueezerayError, match="evo max_predicted_latency_ms=.*no plan within .* is that fast"):
        run_search(_cfg(tmp_path, hardware=profile, study_name="too-fast", n_trials=10,
                        evo=EvoConfig(max_predicted_latency_ms=1000 * fastest * 0.5)), bench=tiny, progress=False)
