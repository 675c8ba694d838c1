"""``--device`` from the command line to the weights: a device this process cannot use is refused by name before
any weight loads; what is loaded sits where it was asked to; a search records where it ran; Ray workers that
would see no GPU are refused. The CUDA half runs where a GPU is (marked ``gpu``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.cli import main
from squeezeray.models import load_model
from squeezeray.search import SearchConfig
from tests._tiny import TINY_DATA
from tests._tiny import tiny_model


@pytest.fixture
def tiny_folder(tmp_path: Path, tokenizer_dir: str) -> str:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_model(len(tok))
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import squeezeray.workbench as workbench

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(workbench, "load_model", refuse)


@pytest.mark.parametrize("argv", [
    ["search", "--trials", "2"],
    ["compress", "--plan", "rtn-w8"],
])
@pytest.mark.parametrize("device, says", [("cuda", "no CUDA device is visible"), ("tpu", "choose auto, cpu, cuda")])
def test_the_cli_refuses_an_unusable_device_before_the_weights_load(
    argv: list[str], device: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    no_cuda: None, no_load: None,
) -> None:
    out = ["--workdir", str(tmp_path / "runs")] if argv[0] == "search" else ["--json", str(tmp_path / "r.json")]
    assert main([*argv, *out, "--device", device]) == 2
    err = capsys.readouterr().err
    assert f"--device={device!r}" in err and says in err
    assert not any(tmp_path.iterdir())  # nothing was written


def test_a_search_config_checks_its_device(no_cuda: None) -> None:
    with pytest.raises(SqueezerayError, match=r"device='cuda:0': no CUDA device is visible"):
        SearchConfig(device="cuda:0")
    assert SearchConfig(device=" CPU ").device == "cpu"


def test_the_weights_load_on_the_device_asked_and_a_search_records_it(tiny_folder: str, tmp_path: Path) -> None:
    from squeezeray.search import run_search
    from squeezeray.search._study import StudyHeader
    from squeezeray.search._study import open_storage

    loaded = load_model(tiny_folder, device="cpu")
    assert loaded.device == torch.device("cpu")
    config = SearchConfig(model=tiny_folder, device="cpu", data=TINY_DATA, n_trials=1, workdir=tmp_path,
                          space="weights-int", sampler="random", final_objectives=("size", "kl"), rerank=1,
                          baselines=("rtn-w8",), study_name="dev")
    run_search(config, progress=False)
    import optuna

    study = optuna.load_study(study_name="dev", storage=open_storage(config.storage_url()))
    header = StudyHeader.read(study)
    assert header.device is not None and header.device.startswith("host CPU")
    assert header.memory_estimate is not None and header.memory_estimate["device"] == "cpu"


def test_ray_workers_that_would_see_no_gpu_are_refused_for_a_cuda_device(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    """``--device cuda`` with workers that reserve no GPU: Ray hides every GPU from them, so say so at start."""
    import ray

    from squeezeray.search import RayConfig
    from squeezeray.search import RayExecutor
    from squeezeray.search._executor import EvalJob
    from squeezeray.spaces import preset_space

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a cluster of 4 CPUs and no GPU
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    job = EvalJob(objectives=("size", "kl"), space=preset_space("weights-int"), model_ref="m", data=TINY_DATA,
                  model_fingerprint="0" * 64, calibration_digest="0", cache_dir=tmp_path, device="cuda")
    executor = RayExecutor(RayConfig(auth_mode="disabled", gpus_per_trial=0))
    with pytest.raises(SqueezerayError, match=r"device='cuda': workers reserve no GPU.*--gpus-per-trial 1"):
        executor.start(job, bench=None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_a_model_loads_onto_the_gpu_and_the_estimate_checks_its_memory(tiny_folder: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from squeezeray.search._footprint import preflight

    loaded = load_model(tiny_folder, device="cuda")
    assert loaded.device == torch.device("cuda", 0)
    assert all(p.device.type == "cuda" for p in loaded.model.parameters())
    fp = preflight(tiny_folder, "auto", TINY_DATA, device=torch.device("cuda", 0))
    assert fp.device == "cuda:0" and "on cuda:0" in fp.describe()
