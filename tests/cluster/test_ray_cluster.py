"""Searches on a real two-node Ray cluster on this machine: head on 127.0.0.2, worker node on 127.0.0.3.

Trials land on both nodes and give the values a local run with the same seed and budget gives;
a node removed mid-trial, a worker process that keeps dying, and a driver killed mid-sweep lose
nothing and duplicate nothing.
"""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray is imported: a private cluster on loopback
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Ray's start-up waits (GCS port 30 s, node registration 30 s) are too short on a loaded 2-core machine
os.environ["RAY_gcs_server_port_wait_time_s"] = "180"

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import optuna  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.cluster  # in the default run; `pytest -m cluster` runs these alone

from squeezeray.search import RayConfig  # noqa: E402
from squeezeray.search import RayExecutor  # noqa: E402
from squeezeray.search import SearchConfig  # noqa: E402
from squeezeray.search import TrialOutcome  # noqa: E402
from squeezeray.search import run_search  # noqa: E402
from tests._tiny import TINY_DATA  # noqa: E402
from tests.cluster._helpers import PoisonEvaluate  # noqa: E402
from tests.cluster._helpers import SavedTinyBench  # noqa: E402
from tests.cluster._helpers import SlowEvaluate  # noqa: E402

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
NODE = {"num_cpus": 1, "object_store_memory": 200 * 2**20}
N_TRIALS = 8
STARTUP_S = 180  # how long a node may take to come up (a quiet machine: 2-5 s)
# a node that stops answering is declared dead after ~2 s instead of ~30 s
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    from ray.cluster_utils import Cluster

    c = Cluster()
    try:
        _add_node(c, **NODE, node_ip_address=HEAD_IP, include_dashboard=False, _system_config=FAST_HEALTH_CHECKS)
        _add_node(c, **NODE, node_ip_address=WORKER_IP)
        c.wait_for_nodes(timeout=STARTUP_S)
        ray.init(address=c.address, logging_level="WARNING",
                 runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}})
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _add_node(cluster, **args):  # noqa: ANN001, ANN003, ANN202
    """``cluster.add_node`` with a start-up wait of STARTUP_S instead of Ray's 30 s."""
    node = cluster.add_node(wait=False, **args)
    cluster._wait_for_node(node, timeout=STARTUP_S)  # noqa: SLF001 - the waiting add_node does, with 30 s
    return node


@pytest.fixture
def two_nodes(cluster):  # noqa: ANN001, ANN201
    """The cluster with its worker node (added again if an earlier test removed it)."""
    if not any(n.node_ip_address == WORKER_IP for n in cluster.worker_nodes):
        _add_node(cluster, **NODE, node_ip_address=WORKER_IP)
        cluster.wait_for_nodes(timeout=STARTUP_S)
    deadline = time.time() + STARTUP_S
    while time.time() < deadline:  # wait until both CPUs are free (actors of the last test released)
        if ray.available_resources().get("CPU", 0) >= 2:
            return cluster
        time.sleep(0.2)
    raise AssertionError(f"cluster resources not released: {ray.available_resources()}")


def _cfg(workdir: Path, **kw) -> SearchConfig:  # noqa: ANN003
    base = dict(space="weights-int", n_trials=N_TRIALS, sampler="random", seed=0, data=TINY_DATA, workdir=workdir,
                final_objectives=("size", "kl"), rerank=2, study_name="s")
    base.update(kw)
    return SearchConfig(**base)


@pytest.fixture(scope="module")
def factory(tiny, tokenizer_dir, tmp_path_factory) -> SavedTinyBench:  # noqa: ANN001
    """Workers build the same tiny workbench as the driver's ``tiny`` from its pickled model."""
    import torch

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(tiny.loaded.model, path)
    return SavedTinyBench(tokenizer_dir, str(path))


def _executor(cluster, factory: SavedTinyBench, **kw) -> RayExecutor:  # noqa: ANN001, ANN003
    evaluate = kw.pop("evaluate", None)
    return RayExecutor(RayConfig(address=cluster.address, workers=2, **kw), bench_factory=factory, evaluate=evaluate)


def _states(study: optuna.Study) -> str:
    return "\n".join(f"{t.number} {t.state.name} {t.user_attrs.get('worker')} {t.user_attrs.get('retries')} "
                     f"{t.user_attrs.get('error', '')[:300]}" for t in study.trials)


def _by_number(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in study.trials}


@pytest.fixture(scope="module")
def local_run(tiny, tmp_path_factory):  # noqa: ANN001, ANN201
    """The in-process reference: same seed, sampler and budget."""
    return run_search(_cfg(tmp_path_factory.mktemp("local")), bench=tiny, progress=False)


def _assert_same_as_local(study: optuna.Study, local: optuna.Study) -> None:
    ours, theirs = _by_number(study), _by_number(local)
    assert set(ours) == set(theirs)
    for n, t in ours.items():
        assert t.params == theirs[n].params, f"trial {n}: different parameters"
        assert t.values == pytest.approx(theirs[n].values, rel=1e-6, abs=1e-9), f"trial {n}"


def test_trials_land_on_both_nodes_and_equal_a_local_run(two_nodes, tiny, factory, local_run, tmp_path) -> None:  # noqa: ANN001
    executor = _executor(two_nodes, factory, disk_cache=False)  # layers shared through the object store only
    result = run_search(_cfg(tmp_path), bench=tiny, progress=False, executor=executor)
    study = result.study
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * N_TRIALS
    nodes = {t.user_attrs["worker"].split("@")[1] for t in study.trials}
    assert nodes == {HEAD_IP, WORKER_IP}
    _assert_same_as_local(study, local_run.study)
    # calibration statistics came from the driver; each compressed layer was computed by one worker only
    infos = executor.worker_infos
    assert len(infos) == 2 and all(i["stats_passes"] == 0 for i in infos)
    computed = sum(i["cache"]["misses"] for i in infos)
    assert computed == len(_distinct_layer_keys(result, tiny))
    assert sum(i["cache"]["shared_hits"] for i in infos) > 0
    stats = executor.stats()
    assert stats.trials == N_TRIALS and stats.retried == 0 and 0 < stats.utilisation <= 1


def _distinct_layer_keys(result, bench) -> set[str]:  # noqa: ANN001
    from squeezeray.search import layer_key

    fp, digest = bench.loaded.fingerprint(), bench.calibration.digest
    keys = set()
    for t in result.study.trials:
        plan = result.space.plan_from_params(t.params, result.layer_names)
        keys |= {layer_key(fp, name, lp, digest) for name, lp in plan.layers.items()}
    return keys


def test_removing_a_node_mid_trial_loses_nothing(two_nodes, tiny, factory, local_run, tmp_path) -> None:  # noqa: ANN001
    markers = tmp_path / "markers"
    markers.mkdir()
    worker_node = next(n for n in two_nodes.worker_nodes if n.node_ip_address == WORKER_IP)
    killed: list[str] = []

    def kill_when_busy() -> None:  # remove the worker node while it evaluates its second trial
        deadline = time.time() + 300
        while time.time() < deadline:
            mine = sorted(markers.glob(f"{WORKER_IP}-*"), key=lambda p: p.stat().st_mtime)
            if len(mine) >= 2:
                killed.append(mine[-1].name.split("-", 1)[1])
                two_nodes.remove_node(worker_node, allow_graceful=False)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_busy, daemon=True)
    watcher.start()
    executor = _executor(two_nodes, factory, evaluate=SlowEvaluate(str(markers), 1.0), max_retries=2)
    result = run_search(_cfg(tmp_path), bench=tiny, progress=False, executor=executor)
    watcher.join(timeout=5)
    assert killed, "the worker node was never busy"
    study = result.study
    # every trial exactly once, all completed: the lost one was re-run elsewhere
    assert sorted(t.number for t in study.trials) == list(range(N_TRIALS))
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in study.trials), _states(study)
    lost = next(t for t in study.trials if f"trial-{t.number}" == killed[0])
    assert len(lost.user_attrs["retries"]) == 1 and WORKER_IP in lost.user_attrs["retries"][0]
    assert lost.user_attrs["worker"].endswith(HEAD_IP)
    assert lost.user_attrs["outcome"] == TrialOutcome.OK.value
    stats = executor.stats()
    assert stats.retried == 1 and stats.restarts == 1
    assert any(w.state == "dead" and w.node_ip == WORKER_IP for w in stats.workers)
    _assert_same_as_local(study, local_run.study)


def test_a_node_the_cluster_stops_listing_is_given_up_though_its_task_never_fails(  # noqa: ANN201
        two_nodes, tiny, factory, local_run, tmp_path, monkeypatch):  # noqa: ANN001
    """Ray may leave a removed node's task pending for good: the driver checks the node list while it waits."""
    import ray

    from squeezeray.search import _ray

    markers = tmp_path / "markers"
    markers.mkdir()
    listed = ray.nodes
    hidden: list[str] = []

    def nodes() -> list[dict]:  # the worker node drops out of the list once, while it runs its second trial
        out = listed()
        mine = sorted(markers.glob(f"{WORKER_IP}-*"), key=lambda p: p.stat().st_mtime)
        if len(mine) >= 2 and not hidden:
            hidden.append(mine[-1].name.split("-", 1)[1])
            return [n for n in out if n.get("NodeManagerAddress") != WORKER_IP]
        return out

    monkeypatch.setattr(ray, "nodes", nodes)
    monkeypatch.setattr(_ray, "NODE_CHECK_S", 0.2)  # checked while the worker sleeps before its trial
    executor = _executor(two_nodes, factory, evaluate=SlowEvaluate(str(markers), 1.0), max_retries=2)
    study = run_search(_cfg(tmp_path), bench=tiny, progress=False, executor=executor).study
    assert hidden, "the worker node never ran a second trial"
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in study.trials), _states(study)
    lost = next(t for t in study.trials if f"trial-{t.number}" == hidden[0])
    assert len(lost.user_attrs["retries"]) == 1 and "no longer alive" in lost.user_attrs["retries"][0]
    stats = executor.stats()
    assert stats.retried == 1 and stats.restarts == 1
    _assert_same_as_local(study, local_run.study)


def test_a_trial_whose_worker_keeps_dying_fails_after_bounded_retries(two_nodes, tiny, factory, tmp_path) -> None:  # noqa: ANN001
    executor = _executor(two_nodes, factory, evaluate=PoisonEvaluate("trial-4"), max_retries=1)
    result = run_search(_cfg(tmp_path, n_trials=6), bench=tiny, progress=False, executor=executor)
    trials = _by_number(result.study)
    assert sorted(trials) == list(range(6))
    poisoned = trials[4]
    assert poisoned.state is optuna.trial.TrialState.FAIL
    assert poisoned.user_attrs["outcome"] == TrialOutcome.FAILED.value
    assert "worker lost 2 times (max_retries=1)" in poisoned.user_attrs["error"]
    assert len(poisoned.user_attrs["retries"]) == 2
    assert all(t.state is optuna.trial.TrialState.COMPLETE for n, t in trials.items() if n != 4)
    assert executor.stats().restarts == 2


def test_driver_killed_mid_sweep_resumes_on_the_cluster(two_nodes, tiny, factory, local_run, tmp_path) -> None:  # noqa: ANN001
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster._driver_worker", two_nodes.address, factory.tokenizer_dir,
         factory.model_path, str(tmp_path), str(N_TRIALS)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"sqlite:///{tmp_path / 's' / 'study.db'}"
    deadline = time.time() + 300  # the subprocess starts a driver and two workers: slow under load
    completed, running = 0, 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            states = [t.state for t in optuna.load_study(study_name="s", storage=url).trials]
        except Exception:  # noqa: BLE001 - not created yet
            continue
        completed = states.count(optuna.trial.TrialState.COMPLETE)
        running = states.count(optuna.trial.TrialState.RUNNING)
        if completed >= 3 and running >= 2:
            break
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = optuna.load_study(study_name="s", storage=url)
    in_flight = [t.number for t in before.trials if t.state is optuna.trial.TrialState.RUNNING]
    assert len(in_flight) >= 2, "both workers had a trial when the driver died"
    before_complete = {t.number: t.values for t in before.trials if t.state is optuna.trial.TrialState.COMPLETE}

    executor = _executor(two_nodes, factory)
    result = run_search(_cfg(tmp_path), bench=tiny, resume=True, progress=False, executor=executor)
    trials = result.study.trials
    complete = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    # the resumed sampler (same seed) may propose plans measured before the kill again: they are closed as
    # duplicates (duplicate_of), never evaluated, and do not count towards n_trials
    measured = [t for t in complete if "duplicate_of" not in t.user_attrs]
    assert len(measured) == N_TRIALS
    assert sorted(t.number for t in trials if t.user_attrs.get("interrupted")) == in_flight
    requeued = {t.user_attrs["requeued_from"]: t for t in complete if "requeued_from" in t.user_attrs}
    # a trial the kill caught before its first parameter has nothing to re-run; one caught while its plan
    # was being sampled is re-run with the parameters it had (the rest sampled anew)
    assert sorted(requeued) == [n for n in in_flight if before.trials[n].params]
    for old, t in requeued.items():
        assert before.trials[old].params.items() <= t.params.items()
    assert sum(len(before.trials[n].params) == len(trials[0].params) for n in in_flight) >= 2, _states(before)
    # completed trials from before the kill were neither lost nor re-run
    assert {n: trials[n].values for n in before_complete} == before_complete
    # the trials run before the kill match the local run's
    local = _by_number(local_run.study)
    for n, values in before_complete.items():
        assert trials[n].params == local[n].params and values == pytest.approx(local[n].values, rel=1e-6, abs=1e-9)


def test_the_sensitivity_stage_runs_on_the_workers_and_equals_a_local_one(two_nodes, tiny, factory, tmp_path,
                                                                           monkeypatch) -> None:  # noqa: ANN001
    from squeezeray.search._sensitivity import SensitivityProbe

    cfg = dict(space="per-layer", sampler="evo", n_trials=12)
    local = run_search(_cfg(tmp_path / "local", **cfg), bench=tiny, progress=False)

    def driver_must_not_measure(self, candidates):  # noqa: ANN001, ANN202 - patched in this process only
        raise AssertionError("the driver measured a sensitivity row itself")

    monkeypatch.setattr(SensitivityProbe, "kl_many", driver_must_not_measure)
    executor = _executor(two_nodes, factory)
    result = run_search(_cfg(tmp_path / "ray", **cfg), bench=tiny, progress=False, executor=executor)
    ours, theirs = result.sensitivity, local.sensitivity
    assert ours is not None and theirs is not None and len(ours) == len(theirs) > 0
    assert list(ours["unit"]) == list(theirs["unit"]) and list(ours["option"]) == list(theirs["option"])
    assert list(ours["nbytes"]) == list(theirs["nbytes"])
    assert ours["kl"].to_numpy() == pytest.approx(theirs["kl"].to_numpy(), rel=1e-4, abs=1e-7)
    assert sum(i["sensitivity_units"] for i in executor.worker_infos) == ours["unit"].nunique()  # each unit once
    assert sum(t.state is optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
               for t in result.study.trials) == 12
