"""Everything follows the weights' device: no tensor is made on a default device.

A CPU machine cannot run CUDA, but it can catch the bug that breaks CUDA runs: a tensor allocated without
``device=`` lands on the *default* device. Inside ``with torch.device("meta")`` the default device is ``meta``,
so any such allocation meets the CPU weights and raises (or leaves a meta tensor behind, which the checks
below look for). The same code then runs unchanged with the model on a GPU (the ``gpu`` tests at the end,
run whenever a CUDA machine is at hand).
"""

from __future__ import annotations

import json

import pytest
import torch

from squeezeray._device import model_device
from squeezeray._device import resolve_device
from squeezeray._errors import SqueezerayError
from squeezeray.compress import compress_layer
from squeezeray.compress._apply import stats_on
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from tests.conftest import correlated_inputs
from tests.contracts.test_technique_contract import REPRESENTATIVE

# Every stored layout: each technique's representative, K-quant superblocks, N:M and row pruning, composed
# steps, a low-rank residual and 8-bit activations.
SPECS = sorted({spec for spec, _ in REPRESENTATIVE.values()} | {
    "gptq-q4_k", "rtn-q6_k", "gptq-w3g64-asym-clip", "rtn-w8", "wanda-2:4", "sparsegpt-2:4+gptq-w4g32",
    "magnitude-s25-rows", "magnitude-s25-rows+rtn-w4g32", "wanda-s50+rtn-w4g32", "rtn-w4g32+svd-r8-res", "wanda-s50+svd-r8-res",
})


def _on_cpu(module: torch.nn.Module) -> list[str]:
    return [n for n, t in [*module.named_buffers(), *module.named_parameters()] if t.device.type != "cpu"]


@pytest.fixture(scope="module")
def layer_and_stats() -> tuple[torch.nn.Linear, torch.Tensor, LayerStats]:
    torch.manual_seed(3)
    lin = torch.nn.Linear(256, 64)  # 256: one K-quant superblock per row
    x = correlated_inputs(384, 256)
    return lin, x, LayerStats.synthetic(x)


@pytest.mark.parametrize("spec", SPECS)
def test_a_technique_allocates_where_its_weight_is(spec: str, layer_and_stats) -> None:  # noqa: ANN001
    lin, x, stats = layer_and_stats
    with torch.device("meta"):
        module = compress_layer("l", lin, parse_steps(spec), stats)
        y = module(x)
        w = module.effective_weight()
    assert not _on_cpu(module)
    assert y.device.type == "cpu" and w.device.type == "cpu"
    assert torch.isfinite(y).all()


def test_statistics_are_handed_over_on_the_host_and_moved_per_layer() -> None:
    x = correlated_inputs(64, 32)
    stats = LayerStats.synthetic(x)
    assert stats_on(stats, "cpu") is stats  # already there: no copy
    moved = stats_on(stats, "meta")
    assert moved.hessian is not None and moved.hessian.device.type == "meta" and moved.n_tokens == stats.n_tokens


def test_calibration_evaluation_and_the_sensitivity_probe_follow_the_model(tokenizer_dir: str) -> None:
    from squeezeray.search._sensitivity import SensitivityProbe
    from tests._tiny import tiny_bench

    bench = tiny_bench(tokenizer_dir)  # a fresh one: its calibration runs under the meta default
    with torch.device("meta"):
        stats = bench.stats(hessian=True)
        layer = next(iter(bench.layers))
        assert stats[layer].hessian is not None and stats[layer].hessian.device.type == "cpu"
        for spec in ("gptq-w4g32", "wanda-2:4+rtn-w4g32", "rtn-w4g32+svd-r8-res"):
            got = bench.evaluate_plan(bench.uniform(spec), ["kl", "perplexity", "size", "token_label_loyalty"])
            assert all(m.value == m.value for m in got.values())  # finite numbers, not meta placeholders
        probe = SensitivityProbe(bench.original, bench.proxy)
        module = compress_layer(layer, bench.original.get_submodule(layer), parse_steps("rtn-w4g32"), stats[layer])
        assert probe.kl({layer: module}) >= 0
    assert model_device(bench.original).type == "cpu" and not _on_cpu(bench.original)


@pytest.mark.parametrize("value", ["auto", None, "cpu", "CPU", " cpu "])
def test_auto_and_cpu_resolve_on_a_machine_without_cuda(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(value) == torch.device("cpu")


@pytest.mark.parametrize("value, says", [("tpu", "choose auto, cpu, cuda or cuda:N"), ("meta", "choose auto"),
                                         ("cuda:x", "choose auto"), ("cuda", "no CUDA device is visible"),
                                         ("cuda:1", "no CUDA device is visible")])
def test_a_device_that_cannot_be_used_is_refused_by_name(value: str, says: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SqueezerayError, match=says) as err:
        resolve_device(value, field="--device")
    assert f"--device={value!r}" in str(err.value)


def test_a_cuda_index_past_the_visible_devices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(SqueezerayError, match="sees 1 CUDA device"):
        resolve_device("cuda:1")


def test_a_grid_moves_with_its_nested_two_level_scales() -> None:
    from squeezeray._device import tensors_on
    from squeezeray.techniques import GGUFType
    from squeezeray.techniques import gguf_grid

    grid = gguf_grid(torch.randn(4, 256), GGUFType.Q4_K)
    assert grid.superblock is not None and tensors_on(grid, "cpu") is grid  # already there: no copy
    moved = tensors_on(grid, "meta")
    assert moved.scales.device.type == "meta" and moved.superblock is not None
    tensors = [v for v in vars(moved.superblock).values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert grid.scales.device.type == "cpu"  # the original is left as it was


# ---------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_the_pipeline_on_cuda_matches_the_cpu(tokenizer_dir: str) -> None:
    """Calibration, GPTQ/Wanda/SVD compression and KL/perplexity on CUDA agree with the same run on the CPU."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from tests._tiny import tiny_bench

    results = {}
    for device in ("cpu", "cuda"):
        bench = tiny_bench(tokenizer_dir)
        bench.loaded.model.to(device)
        results[device] = {spec: bench.evaluate_plan(bench.uniform(spec), ["kl", "perplexity"])
                           for spec in ("gptq-w4g32", "wanda-2:4+rtn-w4g32", "rtn-w4g32+svd-r8-res")}
        assert model_device(bench.original).type == device
    for spec, got in results["cuda"].items():
        for name, m in got.items():
            ref = results["cpu"][spec][name].value
            assert m.value == pytest.approx(ref, rel=2e-2, abs=1e-3), (spec, name)


@pytest.mark.gpu
def test_exports_from_a_model_on_cuda_equal_the_cpu_ones(tmp_path) -> None:  # noqa: ANN001
    """GGUF blocks and compressed-tensors words are packed on the host whatever device the candidate is on."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from squeezeray.data import DataConfig
    from squeezeray.export import ExportConfig
    from squeezeray.export import export_model
    from squeezeray.export._serving import pack_int32
    from squeezeray.workbench import Workbench

    codes = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    assert torch.equal(pack_int32(codes.cuda(), 4), pack_int32(codes, 4))
    files = {}
    for device in ("cpu", "cuda"):
        bench = Workbench.load(None, DataConfig(calib_seqs=4, calib_len=64, eval_tokens=256, proxy_seqs=2),
                               dtype="float32", device=device)
        export_model(bench, bench.uniform("rtn-q8_0"), tmp_path / device,
                     config=ExportConfig(serving=("gguf",), measure=("size",)))
        (entry,) = json.loads((tmp_path / device / "card.json").read_text())["artifact"]["serving"]
        files[device] = (entry["tensor_types"], (tmp_path / device / entry["path"]).stat().st_size)
    assert files["cpu"] == files["cuda"]  # same tensors, same types, same bytes on disk


@pytest.mark.gpu
def test_a_layer_compressed_on_cuda_is_cached_on_the_host_and_swapped_in_on_cuda(tmp_path) -> None:  # noqa: ANN001
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from squeezeray.search import LayerCache

    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64).cuda()
    stats = LayerStats.synthetic(correlated_inputs(256, 128))
    cache = LayerCache(tmp_path)
    fn = cache.layer_fn("model", "calibration")
    got = fn("l", lin, parse_steps("gptq-w4g32"), stats)
    assert all(t.device.type == "cpu" for t in got.buffers())  # the cache's view, on the host
    (entry,) = cache._memory.values()
    assert all(t.device.type == "cpu" for t in entry.buffers())
    model = torch.nn.Sequential(lin)
    from squeezeray.compress import replace_layers

    replace_layers(model, {"0": got})
    assert model_device(model[0]).type == "cuda" and all(t.device.type == "cpu" for t in entry.buffers())
