"""Objectives built on profiles and kernels: measured latency (prefill / decode), predicted latency, energy.

They run on a tiny randomly initialised Llama (2 blocks, hidden 64), built in memory.
"""

from __future__ import annotations

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.compress import CompressedLinear
from squeezeray.compress import compress_layer
from squeezeray.compress import replace_module
from squeezeray.data import TokenData
from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import RooflineCalibration
from squeezeray.hwprofiles import get_profile
from squeezeray.kernels import KernelPath
from squeezeray.objectives import EvalContext
from squeezeray.objectives import Provenance
from squeezeray.objectives import get_objective
from squeezeray.objectives.energy import Energy
from squeezeray.objectives.energy import rapl_counter
from squeezeray.objectives.latency import Latency
from squeezeray.objectives.latency import time_layers
from squeezeray.objectives.predicted_latency import PredictedLatency
from squeezeray.objectives.predicted_latency import linear_cost
from squeezeray.objectives.predicted_latency import target_path
from squeezeray.spaces._plan import parse_steps
from squeezeray.techniques import LayerStats


def _tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


def _compress(model: torch.nn.Module, preset: str) -> torch.nn.Module:
    stats = LayerStats.synthetic(torch.randn(32, 128), with_hessian=False)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            s = LayerStats.synthetic(torch.randn(32, mod.in_features), with_hessian=False) if mod.in_features != 128 else stats
            replace_module(model, name, compress_layer(name, mod, parse_steps(preset), s))
    return model


def _ctx(model: torch.nn.Module) -> EvalContext:
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    data = TokenData.of(ids, "random ids")
    return EvalContext(model, model, data, data)


@pytest.fixture(scope="module")
def dense() -> torch.nn.Module:
    return _tiny_llama()


@pytest.fixture(scope="module")
def int4() -> torch.nn.Module:
    return _compress(_tiny_llama(), "rtn-w4g32")


def test_latency_decode_selects_fast_paths_and_says_so(int4: torch.nn.Module) -> None:
    m = Latency(seq_len=16, phase="decode", new_tokens=3, warmup=0, repeats=1).measure(_ctx(int4))
    assert m.provenance is Provenance.MEASURED and m.unit == "ms" and m.value > 0
    assert m.details["phase"] == "decode" and m.details["kernels"] == "fastest"
    assert sum(m.details["paths"].values()) == 14  # every compressed layer ran a recorded path
    assert set(m.details["paths"]) <= {KernelPath.CPU_INT4.value, KernelPath.REFERENCE.value}
    ref = Latency(seq_len=16, kernels="reference", warmup=0, repeats=1).measure(_ctx(int4))
    assert ref.details["paths"] == {KernelPath.REFERENCE.value: 14}


def test_time_layers_covers_plain_and_compressed(int4: torch.nn.Module) -> None:
    stats = time_layers(int4, tokens=2, names=["model.layers.0.mlp.up_proj", "lm_head"], warmup=0, repeats=2)
    assert set(stats) == {"model.layers.0.mlp.up_proj", "lm_head"}
    assert all(s.median_s > 0 and s.repeats == 2 for s in stats.values())


def test_linear_cost_counts_stored_bytes(dense: torch.nn.Module, int4: torch.nn.Module) -> None:
    h100 = get_profile("h100-sxm")
    d = linear_cost("up", dense.model.layers[0].mlp.up_proj, tokens=1, profile=h100, act_dtype=ComputeDtype.FP16)
    q_mod = int4.model.layers[0].mlp.up_proj
    assert isinstance(q_mod, CompressedLinear)
    q = linear_cost("up", q_mod, tokens=1, profile=h100, act_dtype=ComputeDtype.FP16)
    assert d.weight_bytes == 128 * 64 * 2 and d.path == "dense-fp16"
    assert q.weight_bytes == sum(b.numel() * b.element_size() for b in q_mod.buffers(recurse=False))
    assert q.weight_bytes < d.weight_bytes / 3
    assert q.path == KernelPath.TRITON_DEQUANT.value and q.flops == d.flops
    assert target_path(q_mod.fmt, get_profile("xeon-8480plus")) is KernelPath.CPU_INT4
    assert target_path(q_mod.fmt, get_profile("apple-m2-max")) is KernelPath.REFERENCE


def test_predicted_latency_is_labelled_and_favours_fewer_bytes(dense: torch.nn.Module, int4: torch.nn.Module) -> None:
    obj = get_objective("predicted_latency", profile="h100-sxm", phase="decode", seq_len=16)
    md, mq = obj.measure(_ctx(dense)), obj.measure(_ctx(int4))
    for m in (md, mq):
        assert m.provenance is Provenance.PREDICTED
        assert "h100-sxm" in m.where and "uncalibrated" in m.where
    assert mq.value < md.value  # decode is memory bound: 4-bit weights move fewer bytes
    cal = RooflineCalibration.from_dict({
        "_type": "squeezeray.RooflineCalibration", "_version": 1, "where": "test",
        "per_path": {"block-other-decode": {"bandwidth": 1.0, "compute": 1.0, "overhead_s": 0.001}},
    })
    slow = PredictedLatency(profile="h100-sxm", phase="decode", seq_len=16, calibration=cal).measure(_ctx(dense))
    assert slow.value == pytest.approx(md.value + 2 * 1.0, rel=1e-6)  # 2 blocks x 1 ms
    assert "calibrated on test" in slow.where
    # the calibration fits one path only: the paths it does not fit are named, not passed off as calibrated
    missing = slow.details["uncalibrated_paths"]
    assert missing and "block-other-decode" not in missing and set(missing) <= set(slow.details["ms_per_path"])
    assert all(p in slow.where for p in missing) and "ideal roofline" in slow.where


def test_energy_modelled_from_power_and_measured_time(dense: torch.nn.Module) -> None:
    m = Energy(source="modelled", power_w=10.0, seq_len=16, new_tokens=2, warmup=0, repeats=1).measure(_ctx(dense))
    assert m.provenance is Provenance.PREDICTED and m.unit == "J/token"
    assert m.value == pytest.approx(10.0 * m.details["seconds_per_step"])  # batch 1: one token per step
    assert "modelled" in m.where and "10 W (given)" in m.where and "measured on host" in m.where


def test_energy_modelled_from_profile_tdp_and_roofline(int4: torch.nn.Module) -> None:
    m = Energy(source="modelled", profile="h100-sxm", seq_len=16).measure(_ctx(int4))
    assert m.provenance is Provenance.PREDICTED
    assert m.details["power_w"] == 700.0 and "TDP of h100-sxm" in m.where and "roofline" in m.where
    t = PredictedLatency(profile="h100-sxm", phase="decode", seq_len=16).predict(int4)[0]
    assert m.value == pytest.approx(700.0 * t)


def test_energy_without_counter_or_power_raises(dense: torch.nn.Module) -> None:
    counter, why = rapl_counter()
    if counter is not None:
        pytest.skip("this machine exposes RAPL")
    with pytest.raises(SqueezerayError, match="rapl"):
        Energy(source="rapl").measure(_ctx(dense))
    with pytest.raises(SqueezerayError, match="no power figure"):
        Energy(source="auto", seq_len=16).measure(_ctx(dense))
    with pytest.raises(SqueezerayError, match="TDP"):
        Energy(source="modelled", profile="apple-m2-max", seq_len=16).measure(_ctx(dense))


def test_decode_timing_uses_the_supported_cache_argument(dense: torch.nn.Module) -> None:
    import warnings

    from squeezeray.objectives.latency import time_decode

    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")  # deprecated for removal in transformers 5.40
        steps = time_decode(dense, ids, new_tokens=3, warmup=0, repeats=1)
    assert len(steps) == 3 and all(s > 0 for s in steps)
    # the cache really carries the context: decoding on it equals running the whole sequence
    from squeezeray.objectives.latency import decode_step
    from squeezeray.objectives.latency import prefill

    with torch.no_grad():
        cache = prefill(dense, ids[:, :-1])
        step = dense(input_ids=ids[:, -1:], cache=cache, use_cache=True).logits[:, -1]
        full = dense(input_ids=ids).logits[:, -1]
        assert decode_step(dense, ids[:, -1:], prefill(dense, ids[:, :-1])) is not None
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)
