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


def _weight(out_f: int = 8, in_f: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.05
    w[0, :32] = 0.0  # a dead block: its scale must still decode to zeros
    w[1, 5] = 0.9  # an outlier that sets its block's scale
    w[2, 40] = -0.7
    return w


@pytest.mark.parametrize("qtype", list(GGUFType), ids=lambda t: t.value)
def test_packed_blocks_decode_with_ggufs_dequantizer_exactly(qtype: GGUFType) -> None:
    import gguf

    w = _weight()
    grid = gguf_grid(w, qtype)
    codes = grid.quantize(w)
    raw = pack_blocks(codes, grid.scales, qtype)
    assert raw.shape == (8, 96 // 32 * qtype.block_bytes)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(qtype.ggml_type))
    ours = grid.dequantize(codes).numpy()
    np.testing.assert_array_equal(theirs.astype(np.float32), ours)
    assert np.all(ours[0, :32] == 0)
    assert np.allclose(ours, w.numpy(), atol=float(grid.scales.abs().max()) * 0.51 + 1e-7)


@pytest.mark.parametrize("qtype", [GGUFType.Q8_0, GGUFType.Q5_0, GGUFType.Q4_0], ids=lambda t: t.value)
def test_our_scales_match_llama_cpps_reference_quantizer(qtype: GGUFType) -> None:
    import gguf

    w = _weight(seed=3)
    ref = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType(qtype.ggml_type))
    ref_scales = ref.reshape(-1, qtype.block_bytes)[:, :2].copy().view(np.float16).astype(np.float32).reshape(8, 3)
    ours = gguf_grid(w, qtype).scales.numpy()
    live = ref_scales != 0
    np.testing.assert_array_equal(ours[live], ref_scales[live])  # the same fp16 scale per block


@pytest.mark.parametrize("label", ["rtn-q8_0", "rtn-q4_0", "gptq-q5_0", "gptq-q4_0"])
def test_a_gguf_step_stores_the_files_weights(label: str) -> None:
    import gguf

    cfg = parse_step(label)
    assert cfg.label() == label and type(cfg).from_dict(cfg.to_dict()) == cfg
    w = _weight(out_f=16, in_f=64, seed=1)
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(2))
    stats = LayerStats.synthetic(x)
    state = LayerState.from_weight("layer", w)
    get_technique(cfg.technique).apply(state, cfg, stats)
    layer = CompressedLinear.from_state(state)
    qtype = GGUFType(cfg.gguf)
    from squeezeray.techniques._packing import unpack_bits

    codes = unpack_bits(layer.codes, qtype.bits, 16 * 64).view(16, 64)
    raw = pack_blocks(codes, layer.scales.float(), qtype)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(qtype.ggml_type))
    np.testing.assert_array_equal(theirs.astype(np.float32), layer.effective_weight().numpy())
    stored = layer.codes.numel() * layer.codes.element_size() + layer.scales.numel() * 2
    assert stored == raw.nbytes == 16 * (64 // 32) * qtype.block_bytes  # the same bytes as the file's blocks


def test_gguf_settings_are_checked() -> None:
    with pytest.raises(PlanError, match="awq.gguf='q4_0'"):
        parse_step("awq-q4_0")
    with pytest.raises(PlanError, match="is 4-bit symmetric in blocks of 32"):
        type(parse_step("gptq-q4_0"))(bits=4, group_size=64, gguf="q4_0")
    with pytest.raises(PlanError, match="needs rows of whole 32-input blocks; this layer has 100 inputs"):
        parse_step("gptq-q4_0").check_shape(16, 100)
    assert "gguf" not in parse_step("gptq-w4g128").to_dict()  # plans without a GGUF type read as before
