"""GGUF block types: squeezeray's codes and scales are what gguf's own dequantizers read back, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squeezeray._errors import PlanError
from squeezeray.compress import CompressedLinear
from squeezeray.spaces import parse_step
from squeezeray.techniques import GGUFType
from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import get_technique
from squeezeray.techniques import gguf_grid
from squeezeray.techniques import pack_blocks


def _weight(out_f: int = 8, in_f: int = 96, seed: int = 0, dead: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.05
    w[0, :dead] = 0.0  # a dead block: its scale must still decode to zeros
    w[1, 5] = 0.9  # an outlier that sets its block's scale
    w[2, 40] = -0.7
    return w


def _width(qtype: GGUFType) -> int:
    return 3 * qtype.block  # 96 inputs, or 768 for a K-quant (three super-blocks)


@pytest.mark.parametrize("qtype", list(GGUFType), ids=lambda t: t.value)
def test_packed_blocks_decode_with_ggufs_dequantizer_exactly(qtype: GGUFType) -> None:
    import gguf

    w = _weight(in_f=_width(qtype), dead=qtype.block)
    grid = gguf_grid(w, qtype)
    codes = grid.quantize(w)
    raw = pack_blocks(codes, grid, qtype)
    assert raw.shape == (8, 3 * qtype.block_bytes)
    assert (grid.mins is not None) == qtype.has_min and (grid.superblock is not None) == qtype.is_k
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(qtype.ggml_type))
    ours = grid.dequantize(codes).numpy()
    np.testing.assert_array_equal(theirs.astype(np.float32), ours)
    assert np.all(ours[0, : qtype.block] == 0)
    assert np.allclose(ours, w.numpy(), atol=float(grid.scales.abs().max()) * 0.51 + 1e-7)


def test_k_quant_sizes_are_llama_cpps_bits_per_weight() -> None:
    bpw = {t: 8 * t.block_bytes / t.block for t in GGUFType if t.is_k}
    assert bpw == {GGUFType.Q6_K: 6.5625, GGUFType.Q5_K: 5.5, GGUFType.Q4_K: 4.5, GGUFType.Q3_K: 3.4375,
                   GGUFType.Q2_K: 2.625}


def test_a_pack_of_the_wrong_grid_is_refused() -> None:
    w = _weight()
    with pytest.raises(ValueError, match="q4_1: the grid"):
        pack_blocks(gguf_grid(w, GGUFType.Q4_0).quantize(w), gguf_grid(w, GGUFType.Q4_0), GGUFType.Q4_1)


@pytest.mark.parametrize("qtype", [GGUFType.Q8_0, GGUFType.Q5_0, GGUFType.Q4_0], ids=lambda t: t.value)
def test_our_scales_match_llama_cpps_reference_quantizer(qtype: GGUFType) -> None:
    import gguf

    w = _weight(seed=3)
    ref = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType(qtype.ggml_type))
    ref_scales = ref.reshape(-1, qtype.block_bytes)[:, :2].copy().view(np.float16).astype(np.float32).reshape(8, 3)
    ours = gguf_grid(w, qtype).scales.numpy()
    live = ref_scales != 0
    np.testing.assert_array_equal(ours[live], ref_scales[live])  # the same fp16 scale per block


@pytest.mark.parametrize("qtype", [GGUFType.Q5_1, GGUFType.Q4_1], ids=lambda t: t.value)
def test_our_minimums_match_llama_cpps_reference_and_scales_span_from_them(qtype: GGUFType) -> None:
    import gguf

    w = _weight(seed=3)
    ref = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType(qtype.ggml_type))
    head = ref.reshape(-1, qtype.block_bytes)[:, :4].copy().view(np.float16).astype(np.float32)  # (blocks, 2): d, m
    grid = gguf_grid(w, qtype)
    np.testing.assert_array_equal(grid.mins.numpy().reshape(-1), head[:, 1])  # the same fp16 minimum per block
    live = head[:, 0] != 0
    ours_d = grid.scales.numpy().reshape(-1)
    # d reaches from the fp16 minimum to the block's maximum: the reference's d, up to fp16's last digit
    np.testing.assert_allclose(ours_d[live], head[live, 0], rtol=2.0**-10)
    top = grid.dequantize(torch.full_like(w, (1 << qtype.bits) - 1, dtype=torch.uint8))
    block_max = w.reshape(8, 3, 32).amax(dim=2).repeat_interleave(32, dim=1)
    assert torch.allclose(top, block_max, atol=float(grid.scales.max()))  # the top code decodes near the maximum


@pytest.mark.parametrize("qtype", [GGUFType.Q5_1, GGUFType.Q4_1], ids=lambda t: t.value)
def test_gptq_on_a_minimum_grid_settles_on_the_grids_own_values(qtype: GGUFType) -> None:
    from squeezeray.techniques.gptq import gptq_solve

    w = _weight(out_f=16, in_f=64, seed=4)
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(5))
    h = x.t() @ x / 512
    grid = gguf_grid(w, qtype)
    sol = gptq_solve(w, h, bits=qtype.bits, group_size=32, symmetric=False, grid=grid)
    assert torch.equal(sol.grid.mins, grid.mins) and torch.equal(sol.grid.scales, grid.scales)
    assert torch.equal(sol.qweight, sol.grid.dequantize(sol.codes))  # bit for bit what the file decodes to
    rtn = grid.fake_quantize(w)
    out_err = lambda q: float(((w - q) @ h @ (w - q).t()).trace())  # noqa: E731
    assert out_err(sol.qweight) < out_err(rtn)  # the error compensation works on this grid


def test_a_minimum_grid_takes_no_pruning_mask() -> None:
    from squeezeray._errors import InfeasibleStepError
    from squeezeray.techniques.gptq import gptq_solve

    w = _weight(out_f=4, in_f=64)
    h = torch.eye(64)
    mask = torch.ones(4, 64, dtype=torch.bool)
    mask[:, ::2] = False
    with pytest.raises(InfeasibleStepError, match="no code for a pruned weight"):
        gptq_solve(w, h, bits=4, group_size=32, symmetric=False, grid=gguf_grid(w, GGUFType.Q4_1), mask=mask)


@pytest.mark.parametrize("label", ["rtn-q8_0", "rtn-q4_0", "gptq-q5_0", "gptq-q4_0", "rtn-q4_1", "gptq-q5_1",
                                   "gptq-q4_1", "gptq-q6_k", "gptq-q5_k", "rtn-q4_k", "gptq-q4_k", "gptq-q3_k",
                                   "gptq-q2_k"])
def test_a_gguf_step_stores_the_files_weights(label: str) -> None:
    import gguf

    cfg = parse_step(label)
    assert cfg.label() == label and type(cfg).from_dict(cfg.to_dict()) == cfg
    qtype = GGUFType(cfg.gguf)
    width = 2 * qtype.block
    w = _weight(out_f=16, in_f=width, seed=1)
    x = torch.randn(4 * width, width, generator=torch.Generator().manual_seed(2))
    stats = LayerStats.synthetic(x)
    state = LayerState.from_weight("layer", w)
    get_technique(cfg.technique).apply(state, cfg, stats)
    layer = CompressedLinear.from_state(state)
    from squeezeray.techniques._packing import unpack_bits

    codes = unpack_bits(layer.codes, qtype.bits, 16 * width).view(16, width)
    assert layer.fmt.float_min == qtype.has_min and not hasattr(layer, "zeros")
    assert CompressedLinear(type(layer.fmt).from_dict(layer.fmt.to_dict()), dict(layer.named_buffers())).fmt == layer.fmt
    raw = pack_blocks(codes, layer.stored_grid(), qtype)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(qtype.ggml_type))
    np.testing.assert_array_equal(theirs.astype(np.float32), layer.effective_weight().numpy())
    np.testing.assert_array_equal(state.quant.grid.dequantize(state.quant.codes).numpy(), theirs)  # the solver's
    np.testing.assert_array_equal(layer.rows(torch.tensor([3, 0, 15])).numpy(), theirs[[3, 0, 15]])  # a table's gather
    header = len(__import__("json").dumps(layer.fmt.to_dict(), separators=(",", ":")))
    assert layer.nbytes() - header == raw.nbytes == 16 * 2 * qtype.block_bytes  # the same bytes as the file's blocks


def test_gguf_settings_are_checked() -> None:
    with pytest.raises(PlanError, match="awq.gguf='q4_0'"):
        parse_step("awq-q4_0")
    with pytest.raises(PlanError, match="is 4-bit symmetric in groups of 32"):
        type(parse_step("gptq-q4_0"))(bits=4, group_size=64, gguf="q4_0")
    with pytest.raises(PlanError, match="needs rows of whole 256-input blocks; this layer has 576 inputs"):
        parse_step("gptq-q4_k").check_shape(576, 576)
    parse_step("gptq-q6_k").check_shape(576, 1536)
    with pytest.raises(PlanError, match=r"is 5-bit asymmetric \(a float minimum per group\) in groups of 32"):
        type(parse_step("gptq-q4_0"))(bits=5, group_size=32, gguf="q5_1")
    with pytest.raises(PlanError, match="cannot read 'q8_1'"):
        parse_step("gptq-q8_1")
    with pytest.raises(PlanError, match="needs rows of whole 32-input blocks; this layer has 100 inputs"):
        parse_step("gptq-q4_0").check_shape(16, 100)
    assert "gguf" not in parse_step("gptq-w4g128").to_dict()  # plans without a GGUF type read as before
