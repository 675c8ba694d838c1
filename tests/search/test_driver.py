"""The search driver on a tiny model: baselines, failures, infeasible plans, cache, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray.search import Resume
from squeezeray.search import SearchConfig
from squeezeray.search import TrialOutcome
from squeezeray.search import run_search
from squeezeray.search._study import open_storage
from squeezeray.spaces import preset_space
from tests._tiny import TINY_DATA

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, **kw) -> SearchConfig:  # noqa: ANN003
    base = dict(space="weights-int", n_trials=8, sampler="random", seed=0, data=TINY_DATA, workdir=tmp_path,
                final_objectives=("size", "kl"), rerank=3)
    base.update(kw)
    return SearchConfig(**base)


def test_search_runs_baselines_first_and_builds_a_front(tiny, tmp_path) -> None:  # noqa: ANN001
    result = run_search(_cfg(tmp_path), bench=tiny, progress=False)
    trials = result.trials
    assert len(trials) == 8
    assert (trials["outcome"] == TrialOutcome.OK.value).all()
    baselines = trials[trials["baseline"]]
    assert len(baselines) == 3  # one uniform plan per quantize option of weights-int
    assert set(baselines["trial"]) == {0, 1, 2}
    assert not result.front.empty and result.front["pareto"].any()
    assert set(result.front.columns) >= {"trial", "size", "kl", "plan", "pareto"}
    # uniform 8-bit is the largest, uniform 3-bit the smallest of the baselines
    sizes = trials.set_index("trial")["size"]
    assert sizes[0] > sizes[1] > sizes[2]
    plan = result.plan(int(result.front["trial"].iloc[0]))
    assert len(plan.layers) == len(tiny.layers)


def test_a_crashing_trial_does_not_stop_the_study(tiny, tmp_path) -> None:  # noqa: ANN001
    calls = {"n": 0}

    def flaky(plan):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] in (2, 4):
            raise RuntimeError("worker exploded")
        candidate, _ = tiny.compress(plan)
        return tiny.evaluate(candidate, ["size", "kl"])

    result = run_search(_cfg(tmp_path, n_trials=6), bench=tiny, progress=False, evaluate=flaky)
    failed = result.trials[result.trials["outcome"] == TrialOutcome.FAILED.value]
    assert len(failed) == 2
    assert (failed["error"] == "RuntimeError: worker exploded").all()
    assert (result.trials["outcome"] == TrialOutcome.OK.value).sum() == 4


def test_infeasible_configuration_gets_worst_values_and_a_violated_constraint(tiny, tmp_path) -> None:  # noqa: ANN001
    def refuses_3bit(plan):  # noqa: ANN001, ANN202
        if any("w3" in lp.label() for lp in plan.layers.values()):
            raise PlanError("3-bit is not deployable here")
        candidate, _ = tiny.compress(plan)
        return tiny.evaluate(candidate, ["size", "kl"])

    result = run_search(_cfg(tmp_path, n_trials=6), bench=tiny, progress=False, evaluate=refuses_3bit)
    bad = [t for t in result.study.trials if t.user_attrs.get("outcome") == TrialOutcome.INFEASIBLE.value]
    assert bad, "the uniform 3-bit baseline must be infeasible"
    for t in bad:
        assert t.state is optuna.trial.TrialState.COMPLETE  # told, so TPE/NSGA-II learn from it
        assert t.constraints["feasibility"] > 0
        assert t.values[1] == 100.0  # worst-case KL
    assert all(int(n) not in {t.number for t in bad} for n in result.front["trial"])
    # the trials table (trials.csv) holds measured values only: the told worst case is not a measurement
    rows = result.trials.set_index("trial").loc[[t.number for t in bad]]
    assert rows[["size", "kl"]].isna().all().all() and (rows["outcome"] == "infeasible").all()
    assert rows["error"].str.contains("3-bit is not deployable").all()
    ok = result.trials[result.trials["outcome"] == TrialOutcome.OK.value]
    assert ok[["size", "kl"]].notna().all().all()


def test_cache_makes_repeated_layers_free(tiny, tmp_path) -> None:  # noqa: ANN001
    from squeezeray.search import LayerCache
    from squeezeray.spaces import CompressionPlan

    cache = LayerCache(tmp_path / "cache")
    fn = cache.layer_fn(tiny.loaded.fingerprint(), tiny.calibration.digest)
    plan = CompressionPlan.uniform("gptq-w4g32", tiny.layers)  # the tied table included
    a, _ = tiny.compress(plan, layer_fn=fn)
    assert cache.stats.misses == len(tiny.layers) and cache.stats.hits == 0
    b, _ = tiny.compress(plan, layer_fn=fn)
    assert cache.stats.memory_hits == len(tiny.layers)
    disk = LayerCache(tmp_path / "cache")  # a new process would see the same files
    c, _ = tiny.compress(plan, layer_fn=disk.layer_fn(tiny.loaded.fingerprint(), tiny.calibration.digest))
    assert disk.stats.disk_hits == len(tiny.layers) and disk.stats.misses == 0
    ka = tiny.evaluate(a, ["kl"])["kl"].value
    assert ka == tiny.evaluate(b, ["kl"])["kl"].value == tiny.evaluate(c, ["kl"])["kl"].value


def test_a_cached_layer_is_not_shared_mutably_between_candidates() -> None:
    from squeezeray.search import LayerCache
    from squeezeray.spaces import parse_steps
    from squeezeray.techniques import LayerStats

    lin = torch.nn.Linear(64, 32, bias=False)
    cache = LayerCache()
    fn = cache.layer_fn("fp", "calib")
    stats = LayerStats.synthetic(torch.randn(16, 64), with_hessian=False)
    a = fn("l", lin, parse_steps("rtn-w4g32"), stats)
    b = fn("l", lin, parse_steps("rtn-w4g32"), stats)
    assert cache.stats.memory_hits == 1 and a is not b
    a.materialize()
    a.attach_kernels(None)
    a.last_path = "somewhere"
    assert a.is_materialized and not b.is_materialized and b.last_path is None
    assert a.codes.data_ptr() == b.codes.data_ptr()  # the stored tensors are shared, not copied
    x = torch.randn(3, 64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-6)


def test_existing_study_needs_resume(tiny, tmp_path) -> None:  # noqa: ANN001
    run_search(_cfg(tmp_path, n_trials=3, study_name="s"), bench=tiny, progress=False)
    with pytest.raises(SqueezerayError, match="already exists"):
        run_search(_cfg(tmp_path, n_trials=3, study_name="s"), bench=tiny, progress=False)
    with pytest.raises(SqueezerayError, match="no study 'other'"):
        run_search(_cfg(tmp_path, n_trials=3, study_name="other"), bench=tiny, progress=False, resume=True)


def test_resume_auto_starts_a_new_study_then_continues_it(tiny, tmp_path) -> None:  # noqa: ANN001
    first = run_search(_cfg(tmp_path, n_trials=3, study_name="s"), bench=tiny, progress=False, resume="auto")
    done = {t.number: t.values for t in first.study.trials}
    assert len(done) == 3
    again = run_search(_cfg(tmp_path, n_trials=5, study_name="s"), bench=tiny, progress=False, resume=Resume.AUTO)
    trials = again.study.trials
    assert len(trials) == 5 and {n: trials[n].values for n in done} == done
    with pytest.raises(SqueezerayError, match="resume='maybe'"):
        run_search(_cfg(tmp_path, n_trials=3, study_name="t"), bench=tiny, progress=False, resume="maybe")


def test_resume_after_kill_runs_every_trial_once(tiny, tokenizer_dir, tmp_path) -> None:  # noqa: ANN001
    n_trials = 9
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.search._resume_worker", tokenizer_dir, str(tmp_path), str(n_trials)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"sqlite:///{tmp_path / 'resume' / 'study.db'}"
    deadline = time.time() + 300
    completed = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="resume", storage=open_storage(url))
        except Exception:  # noqa: BLE001 - not created yet
            continue
        states = [t.state for t in study.trials]
        completed = states.count(optuna.trial.TrialState.COMPLETE)
        if completed >= 4 and optuna.trial.TrialState.RUNNING in states:
            break
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 4 <= completed < n_trials
    before = optuna.load_study(study_name="resume", storage=url)
    in_flight = [t.number for t in before.trials if t.state is optuna.trial.TrialState.RUNNING]
    assert in_flight, "the kill must leave a trial in flight"

    cfg = SearchConfig(space="weights-int", n_trials=n_trials, sampler="random", seed=3, data=TINY_DATA,
                       workdir=tmp_path, study_name="resume", final_objectives=("size", "kl"), rerank=2)
    result = run_search(cfg, bench=tiny, resume=True, progress=False)
    trials = result.study.trials
    complete = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert len([t for t in complete if "duplicate_of" not in t.user_attrs]) == n_trials  # duplicates: not re-run
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == in_flight
    requeued = [t for t in complete if "requeued_from" in t.user_attrs]
    assert sorted(t.user_attrs["requeued_from"] for t in requeued) == in_flight
    for t in requeued:  # every parameter the killed trial had sampled is kept (a kill mid-sampling leaves a few)
        assert trials[t.user_attrs["requeued_from"]].params.items() <= t.params.items()
    # completed trials from before the kill were neither lost nor re-run
    before_complete = {t.number for t in before.trials if t.state is optuna.trial.TrialState.COMPLETE}
    assert before_complete <= {t.number for t in complete}


def test_space_matching_nothing_is_an_error(tiny, tmp_path) -> None:  # noqa: ANN001
    from squeezeray.spaces import GroupSpec
    from squeezeray.spaces import SearchSpace

    space = SearchSpace("none", (GroupSpec("x", ("*.nothing",), quantize=("rtn-w8",)),))
    with pytest.raises(SqueezerayError, match="matches no layer"):
        run_search(_cfg(tmp_path, space=space), bench=tiny, progress=False)
    assert preset_space("weights-int").units(tiny.layers)


def test_python_api_returns_front_and_selected_plan(tiny, tmp_path) -> None:  # noqa: ANN001
    import squeezeray

    result = squeezeray.search(
        bench=tiny, space="weights-int", objectives=["size", "kl"], final_objectives=["size", "perplexity", "kl"],
        n_trials=6, sampler="random", seed=1, workdir=tmp_path, progress=False, rerank=6,
        weights={"size": 1.0, "perplexity": 1.0},
    )
    assert {"trial", "size", "perplexity", "kl", "pareto"} <= set(result.front.columns)
    assert result.selected in set(result.front["trial"])
    assert "trial" in result.selection_reason
    plan = result.plan()
    assert set(plan.layers) == set(tiny.layers)
    # a tight size limit moves the pick to the smallest candidate that fits
    smallest = result.front.sort_values("size").iloc[0]
    tight = squeezeray.search.select_from(result, {"max_size_bytes": float(smallest["size"])}, {"perplexity": 1.0})
    assert tight.selected == int(smallest["trial"])


def test_calibration_statistics_persist_on_disk(tokenizer_dir, tmp_path) -> None:  # noqa: ANN001
    import torch

    from tests._tiny import tiny_bench

    first = tiny_bench(tokenizer_dir)
    first.cache_dir = tmp_path
    a = first.stats(hessian=True)
    folders = [p for p in (tmp_path / "stats").iterdir()]
    assert len(folders) == 1 and (folders[0] / "index.json").is_file()
    assert first.calibration_method == "block-wise"
    second = tiny_bench(tokenizer_dir)  # another process would build the same model and data
    second.cache_dir = tmp_path
    import squeezeray.workbench as wb

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("statistics were recomputed instead of loaded")

    original = wb.collect_stats, wb.collect_stats_blockwise
    wb.collect_stats = wb.collect_stats_blockwise = boom
    try:
        b = second.stats(hessian=False)  # the Hessian file serves a request without Hessian too
    finally:
        wb.collect_stats, wb.collect_stats_blockwise = original
    for name in a:
        assert torch.equal(a[name].hessian, b[name].hessian)
    q, k = (n for n in b if n.endswith(("q_proj", "k_proj")) and ".0." in n)
    assert b[q] is b[k]  # shared inputs stay shared


def test_the_search_says_how_long_the_rest_should_take(tiny, tmp_path, capsys) -> None:  # noqa: ANN001
    run_search(_cfg(tmp_path, n_trials=5), bench=tiny, progress=True)
    err = capsys.readouterr().err
    assert "time estimate after 3 trial(s):" in err and "2 remaining:" in err
    assert "time estimate after 10" not in err  # only 5 trials: the second estimate would come after 10
