"""W8A8 with SmoothQuant, and per-token activation fake quantization."""

from __future__ import annotations

import pytest
import torch

from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import RTNConfig
from squeezeray.techniques import W8A8Config
from squeezeray.techniques import get_technique
from squeezeray.techniques import minmax_grid
from squeezeray.techniques import sqnr_db
from squeezeray.techniques._actquant import fake_quant_per_token
from squeezeray.techniques.w8a8 import W8A8
from squeezeray.techniques.w8a8 import smoothquant_scales


def _outlier_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))  # (n, d)
    x[:, [3, 50, 77]] *= 60.0
    return x


def _weight(out_f: int, in_f: int, seed: int) -> torch.Tensor:
    return 0.05 * torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed))


def test_fake_quant_per_token() -> None:
    x = torch.randn(4, 6, 32, generator=torch.Generator().manual_seed(0))  # (batch, tokens, in)
    x[0, 0] = 0.0
    q = fake_quant_per_token(x, 8)
    assert q.shape == x.shape and q.dtype == x.dtype
    assert bool((q[0, 0] == 0).all())
    scale = x.abs().amax(dim=-1, keepdim=True) / 127  # (batch, tokens, 1)
    codes = q / scale.clamp(min=1e-30)
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-3)
    assert float(codes.abs().max()) <= 127 + 1e-3
    assert bool(((q - x).abs() <= scale / 2 + 1e-6).all())
    # Lower bit widths are coarser; 16 bits means no quantization.
    assert sqnr_db(x, fake_quant_per_token(x, 4)) < sqnr_db(x, q)
    assert fake_quant_per_token(x, 16) is x
    half = fake_quant_per_token(x.half(), 8)
    assert half.dtype == torch.float16


def test_w8a8_output_close_and_smoothing_helps() -> None:
    x = _outlier_inputs(256, 128, seed=1)
    w = _weight(64, 128, seed=2)
    state = LayerState.from_weight("l", w)
    W8A8().apply(state, W8A8Config(alpha=0.5), LayerStats.synthetic(x, with_hessian=False))
    assert state.act is not None and state.quant is not None
    assert state.act.bits == 8
    smooth = state.act.smooth  # (in,)
    deq = state.quant.grid.dequantize(state.quant.codes)  # (out, in) smoothed INT8 weight
    assert state.quant.grid.group_size == 128 and state.quant.grid.bits == 8
    assert torch.equal(state.weight, deq / smooth)

    y = x @ w.T  # (n, out)
    y_smooth = fake_quant_per_token(x / smooth, 8) @ deq.T
    plain = minmax_grid(w, bits=8, group_size=None, symmetric=True).fake_quantize(w)
    y_plain = fake_quant_per_token(x, 8) @ plain.T
    # Measured: 43.7 dB smoothed vs 32.4 dB without smoothing.
    assert sqnr_db(y, y_smooth) > 38.0
    assert sqnr_db(y, y_smooth) > sqnr_db(y, y_plain) + 5.0


def test_smoothquant_scales_formula_and_dead_channels() -> None:
    w = _weight(16, 8, seed=3)
    w[:, 2] = 0.0
    a = torch.rand(8, generator=torch.Generator().manual_seed(4)) * 10 + 0.5
    a[5] = 0.0
    s = smoothquant_scales(a, w, 0.5)
    expected = a.sqrt() / w.abs().amax(0).sqrt()
    live = torch.ones(8, dtype=torch.bool)
    live[[2, 5]] = False
    torch.testing.assert_close(s[live], expected[live], rtol=1e-3, atol=0)
    assert torch.equal(s[~live], torch.ones(2))
    assert torch.equal(s, s.half().float())
    # alpha = 1 moves everything onto the weights: s = max|x|.
    torch.testing.assert_close(smoothquant_scales(a, w, 1.0)[live], a[live], rtol=1e-3, atol=0)


def test_w8a8_refuses_quantized_state() -> None:
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(5))
    state = LayerState.from_weight("l", _weight(8, 16, seed=6))
    get_technique("rtn").apply(state, RTNConfig(bits=4, group_size=None), LayerStats.synthetic(x))
    with pytest.raises(ValueError, match="already quantized"):
        get_technique("w8a8").apply(state, W8A8Config(), LayerStats.synthetic(x))
