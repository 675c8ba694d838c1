"""AWQ: activation-aware scaling beats RTN on salient channels; the layer stays honest."""

from __future__ import annotations

import pytest
import torch

from squeezeray.techniques import AWQConfig
from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import RTNConfig
from squeezeray.techniques import SparsityPattern
from squeezeray.techniques import get_technique
from squeezeray.techniques import minmax_grid
from squeezeray.techniques._actquant import SCALE_ONLY_BITS
from squeezeray.techniques._state import SparsityState
from squeezeray.techniques.awq import AWQ
from squeezeray.techniques.awq import awq_quantize
from squeezeray.techniques.awq import awq_scales
from squeezeray.techniques._clip import clip_search
from squeezeray.techniques._clip import output_error


def _salient_inputs(n: int, d: int, seed: int, boost: float = 20.0) -> torch.Tensor:
    """(n, d) Gaussian inputs whose first four channels are ``boost`` times larger."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))  # (n, d)
    x[:, :4] *= boost
    return x


def _weight(out_f: int, in_f: int, seed: int) -> torch.Tensor:
    return torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed))


def _err(w_hat: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> float:
    return float(output_error((w_hat - w).double(), h.double()).sum())


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group_size", [None, 32])
@pytest.mark.parametrize("clip", [False, True])
def test_awq_beats_rtn_with_salient_channels(bits: int, group_size: int | None, clip: bool) -> None:
    x = _salient_inputs(512, 128, seed=0)
    stats = LayerStats.synthetic(x)
    w = _weight(32, 128, seed=1)
    rtn = LayerState.from_weight("l", w)
    get_technique("rtn").apply(rtn, RTNConfig(bits=bits, group_size=group_size), stats)
    awq = LayerState.from_weight("l", w)
    get_technique("awq").apply(awq, AWQConfig(bits=bits, group_size=group_size, clip_search=clip), stats)

    assert stats.hessian is not None
    e_rtn = _err(rtn.weight, w, stats.hessian)
    e_awq = _err(awq.weight, w, stats.hessian)
    # Measured ratios: 0.47..0.63 without clipping, 0.26..0.43 with it.
    assert e_awq < 0.75 * e_rtn
    y = x @ w.T
    assert float((x @ awq.weight.T - y).pow(2).mean()) < float((x @ rtn.weight.T - y).pow(2).mean())


def test_awq_never_worse_than_rtn_on_uniform_inputs() -> None:
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(2))
    h = x.T @ x / x.shape[0]
    w = _weight(16, 64, seed=3)
    rtn = minmax_grid(w, bits=4, group_size=16, symmetric=True).fake_quantize(w)
    res = awq_quantize(w, h, x.abs().mean(0), bits=4, group_size=16, symmetric=True, clip=True)
    assert res.error <= _err(rtn, w, h) * (1 + 1e-5)


def test_layer_stores_scale_only_act_state_consistently() -> None:
    x = _salient_inputs(512, 64, seed=4)
    stats = LayerStats.synthetic(x)
    w = _weight(16, 64, seed=5)
    state = LayerState.from_weight("l", w)
    AWQ().apply(state, AWQConfig(bits=4, group_size=16), stats)
    assert state.act is not None and state.quant is not None
    assert state.act.bits == SCALE_ONLY_BITS
    smooth = state.act.smooth  # (in,)
    assert smooth.shape == (64,)
    assert torch.equal(smooth, smooth.half().float())  # stored in float16 losslessly
    deq = state.quant.grid.dequantize(state.quant.codes)  # (out, in) on the scaled weight
    assert torch.equal(state.weight, deq / smooth)
    # The deployed computation (x / s) @ deq.T equals x @ weight.T.
    torch.testing.assert_close((x / smooth) @ deq.T, x @ state.weight.T, rtol=1e-4, atol=1e-3)
    # Salient channels get the larger scales.
    assert float(smooth[:4].min()) > float(smooth[4:].max())


def test_alpha_zero_is_rtn_and_leaves_no_act_state() -> None:
    sal = torch.rand(32, generator=torch.Generator().manual_seed(6)) + 0.1
    assert torch.equal(awq_scales(sal, 0.0), torch.ones(32))
    x = torch.randn(128, 32, generator=torch.Generator().manual_seed(7))
    w = _weight(8, 32, seed=8)
    state = LayerState.from_weight("l", w)
    AWQ().apply(state, AWQConfig(bits=4, group_size=None, grid_points=1, clip_search=False), LayerStats.synthetic(x))
    assert state.act is None
    torch.testing.assert_close(state.weight, minmax_grid(w, bits=4, group_size=None, symmetric=True).fake_quantize(w))


def test_clip_search_does_not_increase_row_error() -> None:
    x = _salient_inputs(256, 64, seed=9, boost=5.0)
    h = x.T @ x / x.shape[0]
    w = _weight(16, 64, seed=10)
    w[:, 7] *= 8.0  # a weight outlier makes clipping worthwhile
    s = awq_scales(x.abs().mean(0), 0.5)
    base = minmax_grid(w * s, bits=3, group_size=16, symmetric=False)
    clipped = clip_search(w, s, h, bits=3, group_size=16, symmetric=False)
    e_base = output_error(base.fake_quantize(w * s) / s - w, h)  # (out,)
    e_clip = output_error(clipped.fake_quantize(w * s) / s - w, h)  # (out,)
    assert bool((e_clip <= e_base * (1 + 1e-6)).all())
    assert float(e_clip.sum()) < float(e_base.sum())
    assert clipped.zeros is not None and int(clipped.zeros.max()) <= 7


def test_awq_respects_prune_mask() -> None:
    x = _salient_inputs(256, 64, seed=11)
    w = _weight(16, 64, seed=12)
    mask = torch.rand(16, 64, generator=torch.Generator().manual_seed(13)) > 0.5
    state = LayerState.from_weight("l", w)
    state.sparsity = SparsityState(SparsityPattern.UNSTRUCTURED, mask)
    state.refresh_weight()
    AWQ().apply(state, AWQConfig(bits=4, group_size=16), LayerStats.synthetic(x))
    assert bool((state.weight[~mask] == 0).all())
    assert torch.isfinite(state.weight).all()


def test_awq_refuses_quantized_state() -> None:
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(14))
    state = LayerState.from_weight("l", _weight(8, 32, seed=15))
    get_technique("rtn").apply(state, RTNConfig(bits=4, group_size=None), LayerStats.synthetic(x))
    with pytest.raises(ValueError, match="already quantized"):
        AWQ().apply(state, AWQConfig(bits=4, group_size=None), LayerStats.synthetic(x))
    assert AWQ.needs_hessian


def test_the_clip_search_in_groups_equals_the_ungrouped_definition() -> None:
    """The search works on the weight in groups, padded once: each ratio's (row, group) errors equal
    group_output_error of the ungrouped effective weight, so the chosen grid is the same bit for bit."""
    from squeezeray.techniques import QuantFormat
    from squeezeray.techniques._clip import CLIP_RATIOS
    from squeezeray.techniques._clip import effective_weight
    from squeezeray.techniques._clip import group_output_error

    g = torch.Generator().manual_seed(21)
    w = torch.randn(6, 40, generator=g)  # 40 = 2 x 16 + 8: a ragged last group
    x = torch.randn(128, 40, generator=g)
    h = x.T @ x / 128
    s = torch.rand(40, generator=g) + 0.5
    keep = torch.rand(6, 40, generator=g) > 0.3
    formats = ((QuantFormat.INT, False, 4), (QuantFormat.INT, True, 4), (QuantFormat.NF4, True, 4),
               (QuantFormat.FP8_E4M3, True, 8))
    for fmt, sym, bits in formats:
        grid = minmax_grid(w * s, bits=bits, group_size=16, symmetric=sym, fmt=fmt)
        grouped = grid.fake_quantize_grouped(grid.grouped(w * s))  # (6, 3, 16)
        assert torch.equal(grouped.reshape(6, -1)[:, :40], grid.fake_quantize(w * s))
        assert torch.equal(grouped[:, -1, 8:], torch.zeros(6, 8))  # the padding rounds to exactly 0
    # reference: the per-ratio errors of the ungrouped definition, and the grid they pick before the row check
    for mask in (None, keep):
        ref = torch.stack([group_output_error(effective_weight(
            minmax_grid(w * s, bits=3, group_size=16, symmetric=False, clip=r), w * s, s, mask) - w, h, 16)
            for r in CLIP_RATIOS])
        best = ref.argmin(dim=0)  # (out, G)
        grids = [minmax_grid(w * s, bits=3, group_size=16, symmetric=False, clip=r) for r in CLIP_RATIOS]
        picked = torch.stack([gr.scales for gr in grids]).gather(0, best.unsqueeze(0)).squeeze(0)
        base = minmax_grid(w * s, bits=3, group_size=16, symmetric=False)
        got = clip_search(w, s, h, bits=3, group_size=16, symmetric=False, mask=mask)
        rows = (got.scales != base.scales).any(dim=1)  # rows that took the clipped grid
        assert torch.equal(got.scales[rows], picked[rows])
