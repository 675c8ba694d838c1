"""Every registered technique passes the same contract."""

from __future__ import annotations

import math

import pytest
import torch

from squeezeray.compress import CompressedLinear
from squeezeray.compress import compress_layer
from squeezeray.spaces import LayerPlan
from squeezeray.spaces import parse_steps
from squeezeray.techniques import TECHNIQUES
from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import get_technique
from squeezeray.techniques import sqnr_db
from squeezeray.techniques._config import StepKind
from squeezeray.techniques._registry import config_class
from tests.conftest import correlated_inputs

# One representative setting per technique, and the SQNR (dB) of the layer output it must reach.
REPRESENTATIVE = {
    "rtn": ("rtn-w4g32", 15.0),
    "gptq": ("gptq-w4g32", 15.0),
    "awq": ("awq-w4g32", 15.0),
    "nf4": ("nf4-g32", 15.0),
    "fp8": ("fp8", 25.0),
    "w8a8": ("w8a8-a0.5", 30.0),
    "magnitude": ("magnitude-s50", 2.0),
    "wanda": ("wanda-s50", 3.0),
    "sparsegpt": ("sparsegpt-s50", 6.0),
    "svd": ("svd-r24", 1.0),
}
OUT, IN = 48, 96  # 96 = 32 * 3; group sizes of 32 divide it


def test_every_technique_has_a_contract_entry() -> None:
    assert sorted(REPRESENTATIVE) == TECHNIQUES.names()


@pytest.fixture(scope="module")
def layer_and_inputs() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(1)
    lin = torch.nn.Linear(IN, OUT)
    return lin, correlated_inputs(512, IN)


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE))
class TestTechniqueContract:
    def test_config_round_trips(self, name: str) -> None:
        cfg = parse_steps(REPRESENTATIVE[name][0]).steps[0]
        assert type(cfg) is config_class(name) is TECHNIQUES.get(name).config_cls
        assert cfg.technique == name
        assert type(cfg).from_dict(cfg.to_dict()) == cfg
        assert isinstance(cfg.kind, StepKind)

    def test_output_quality_floor(self, name: str, layer_and_inputs) -> None:  # noqa: ANN001
        lin, x = layer_and_inputs
        spec, floor = REPRESENTATIVE[name]
        module = compress_layer("l", lin, parse_steps(spec), LayerStats.synthetic(x))
        with torch.no_grad():
            ref, out = lin(x), module(x)
        assert torch.isfinite(out).all()
        assert sqnr_db(ref, out) > floor

    def test_stored_module_matches_state(self, name: str, layer_and_inputs) -> None:  # noqa: ANN001
        lin, x = layer_and_inputs
        stats = LayerStats.synthetic(x)
        state = LayerState.from_weight("l", lin.weight, lin.bias)
        cfg = parse_steps(REPRESENTATIVE[name][0]).steps[0]
        get_technique(name).apply(state, cfg, stats)
        module = CompressedLinear.from_state(state)
        # the stored form rounds scales and float values to float16: agreement to fp16 precision
        assert sqnr_db(state.effective_weight(), module.effective_weight()) > 40

    def test_stored_size_is_smaller_than_fp16(self, name: str, layer_and_inputs) -> None:  # noqa: ANN001
        lin, x = layer_and_inputs
        module = compress_layer("l", lin, parse_steps(REPRESENTATIVE[name][0]), LayerStats.synthetic(x))
        assert module.nbytes() < (lin.weight.numel() + lin.bias.numel()) * 2

    def test_refuses_a_second_step_of_its_kind(self, name: str, layer_and_inputs) -> None:  # noqa: ANN001
        lin, x = layer_and_inputs
        stats = LayerStats.synthetic(x)
        state = LayerState.from_weight("l", lin.weight, lin.bias)
        cfg = parse_steps(REPRESENTATIVE[name][0]).steps[0]
        technique = get_technique(name)
        technique.apply(state, cfg, stats)
        with pytest.raises(ValueError):
            technique.apply(state, cfg, stats)


def test_apply_does_not_modify_the_original_layer(layer_and_inputs) -> None:  # noqa: ANN001
    lin, x = layer_and_inputs
    before = lin.weight.detach().clone()
    compress_layer("l", lin, LayerPlan(tuple(parse_steps("sparsegpt-s50+gptq-w4g32").steps)), LayerStats.synthetic(x))
    assert torch.equal(lin.weight, before)


def test_hessian_flag_matches_use() -> None:
    needs = {n for n in TECHNIQUES.names() if TECHNIQUES.get(n).needs_hessian}
    assert needs == {"gptq", "awq", "sparsegpt"}
    assert math.isfinite(len(needs))
