"""Cluster settings, checked without a cluster: validation, RAY_AUTH_MODE, CLI flags, worker startup errors."""

from __future__ import annotations

import pytest

# no cluster is started here: these run in the default suite (tests/cluster/test_ray_cluster.py is marked `cluster`)
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.cli import main
from squeezeray.search import RayAuthMode
from squeezeray.search import RayConfig
from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from squeezeray.search._executor import EvalJob
from squeezeray.search._executor import space_needs_hessian
from squeezeray.spaces import GroupSpec
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import preset_space


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"address": ""}, "ray address=''"),
        ({"address": "ray://head:10001"}, "Ray Client is not supported"),
        ({"address": "headnode"}, "use local, auto or HOST:PORT"),
        ({"workers": 0}, "workers=0"),
        ({"cpus_per_trial": 0}, "cpus_per_trial=0"),
        ({"gpus_per_trial": -1}, "gpus_per_trial=-1"),
        ({"memory_per_trial": 1.5}, "memory_per_trial=1.5"),
        ({"max_retries": -1}, "max_retries=-1"),
        ({"prefetch": True}, "prefetch=True"),
        ({"auth_mode": "none"}, "auth_mode='none'"),
        ({"address": "auto", "local_cpus": 2}, "apply to address='local'"),
    ],
)
def test_bad_settings_name_the_field(kw, match) -> None:  # noqa: ANN001
    with pytest.raises(SqueezerayError, match=match):
        RayConfig(**kw)


def test_auth_mode_comes_from_the_environment_and_must_be_set(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(SqueezerayError, match="RAY_AUTH_MODE is not set"):
        RayConfig().resolved_auth_mode()
    assert RayConfig(auth_mode="disabled").resolved_auth_mode() is RayAuthMode.DISABLED
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert RayConfig().resolved_auth_mode() is RayAuthMode.TOKEN
    with pytest.raises(SqueezerayError, match="environment has RAY_AUTH_MODE='token'"):
        RayConfig(auth_mode="disabled").resolved_auth_mode()
    monkeypatch.setenv("RAY_AUTH_MODE", "off")
    with pytest.raises(SqueezerayError, match="RAY_AUTH_MODE='off'"):
        RayConfig().resolved_auth_mode()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2"], "--workers=2: only applies with --ray"),
        (["--gpus-per-trial", "1"], "--gpus-per-trial=1.0: only applies with --ray"),
        (["--no-worker-disk-cache"], "--no-worker-disk-cache: only applies with --ray"),
        (["--ray", "ray://h:10001"], "Ray Client is not supported"),
        (["--ray", "local", "--memory-per-trial", "0"], "--memory-per-trial=0.0"),
        (["--ray", "local", "--workers", "0"], "workers=0"),
    ],
)
def test_cluster_flags_fail_before_the_model_loads(argv, message, capsys, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert main(["search", "--workdir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_ray_without_auth_mode_fails_before_the_model_loads(capsys, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert main(["search", "--ray", "local", "--workdir", str(tmp_path)]) == 2
    assert "RAY_AUTH_MODE is not set" in capsys.readouterr().err


def test_evaluate_and_executor_exclude_each_other(tmp_path) -> None:  # noqa: ANN001
    from squeezeray.search import RayExecutor

    with pytest.raises(SqueezerayError, match="exclude each other"):
        run_search(SearchConfig(workdir=tmp_path), evaluate=lambda plan: {}, executor=RayExecutor())


def test_hessian_is_shipped_only_when_the_space_needs_it() -> None:
    assert space_needs_hessian(preset_space("weights-int"))  # GPTQ
    rtn = SearchSpace("rtn", (GroupSpec("all", ("*",), quantize=("rtn-w8", "rtn-w4g128")),))
    assert not space_needs_hessian(rtn)


def test_a_worker_on_a_different_model_refuses_to_start(tiny, tokenizer_dir, tmp_path) -> None:  # noqa: ANN001
    """No silent fallback: the worker reports the mismatch, and the executor stops the sweep with it."""
    from squeezeray.search._ray_workers import _TrialWorker
    from squeezeray.search._ray_workers import default_worker_evaluate

    job = EvalJob(objectives=("size", "kl"), space=preset_space("weights-int"), model_ref="tiny-llama", data=tiny.data,
                  model_fingerprint="0" * 64, calibration_digest=tiny.calibration.digest, cache_dir=tmp_path)
    threads = torch.get_num_threads()  # the worker sets it; keep this process's own
    worker = _TrialWorker("w0", job, lambda: tiny, None, False, None, default_worker_evaluate, threads, False)
    assert "model fingerprint" in worker.error and "differs from the driver's 000000000000" in worker.error
