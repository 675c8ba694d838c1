"""Truncated SVD: plain (replaces the weight) and residual (corrects earlier steps)."""

from __future__ import annotations

import pytest
import torch

from squeezeray.techniques import LayerState
from squeezeray.techniques import LayerStats
from squeezeray.techniques import MagnitudeConfig
from squeezeray.techniques import RTNConfig
from squeezeray.techniques import SVDConfig
from squeezeray.techniques import get_technique
from squeezeray.techniques.magnitude import Magnitude
from squeezeray.techniques.rtn import RTN
from squeezeray.techniques.svd import SVD
from squeezeray.techniques.svd import truncated_svd


def _layer(out_f: int = 24, in_f: int = 32, seed: int = 0) -> tuple[LayerState, LayerStats]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)  # (out, in)
    x = torch.randn(64, in_f, generator=g)  # (tokens, in)
    return LayerState.from_weight("layer", w), LayerStats.synthetic(x, with_hessian=False)


@pytest.mark.parametrize("rank", [1, 4, 12, 24])
def test_truncated_svd_is_eckart_young_optimal(rank: int) -> None:
    g = torch.Generator().manual_seed(rank)
    w = torch.randn(24, 32, generator=g)
    u, v = truncated_svd(w, rank)
    assert u.shape == (24, rank) and v.shape == (rank, 32)
    s = torch.linalg.svdvals(w.double())
    err = float((w.double() - (u @ v).double()).pow(2).sum())
    expected = float(s[rank:].pow(2).sum())
    assert err == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert torch.allclose(v @ v.T, torch.eye(rank), atol=1e-4)  # orthonormal rows


def test_truncated_svd_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match="rank"):
        truncated_svd(torch.ones(4, 6), 0)
    with pytest.raises(ValueError, match="rank"):
        truncated_svd(torch.ones(4, 6), 5)
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(torch.ones(4), 1)


def test_plain_svd_replaces_main_weight() -> None:
    state, stats = _layer()
    assert isinstance(get_technique("svd"), SVD)
    SVD().apply(state, SVDConfig(rank=8), stats)
    lr = state.lowrank
    assert lr is not None and lr.replaces_main
    assert lr.u.shape == (24, 8) and lr.v.shape == (8, 32)
    assert torch.equal(state.weight, torch.zeros(24, 32))
    assert torch.equal(state.effective_weight(), lr.u @ lr.v)
    s = torch.linalg.svdvals(state.original.double())
    err = float((state.original - state.effective_weight()).double().pow(2).sum())
    assert err == pytest.approx(float(s[8:].pow(2).sum()), rel=1e-3)


def test_residual_svd_reduces_rtn_error() -> None:
    state, stats = _layer()
    RTN().apply(state, RTNConfig(bits=3, group_size=8), stats)
    rtn_err = float((state.original - state.effective_weight()).pow(2).sum())
    weight_before = state.weight.clone()
    SVD().apply(state, SVDConfig(rank=8, residual=True), stats)
    lr = state.lowrank
    assert lr is not None and not lr.replaces_main
    assert torch.equal(state.weight, weight_before)  # the quantized path is untouched
    assert torch.allclose(state.effective_weight(), weight_before + lr.u @ lr.v)
    res_err = float((state.original - state.effective_weight()).pow(2).sum())
    # Eckart-Young on the residual: the new error is its discarded spectrum.
    s = torch.linalg.svdvals((state.original - weight_before).double())
    assert res_err == pytest.approx(float(s[8:].pow(2).sum()), rel=1e-3)
    # Measured: rank 8 of 24 leaves 0.27 of RTN-3bit's error.
    assert res_err < 0.5 * rtn_err


def test_residual_svd_after_pruning() -> None:
    state, stats = _layer()
    Magnitude().apply(state, MagnitudeConfig(sparsity=0.5), stats)
    prune_err = float((state.original - state.effective_weight()).pow(2).sum())
    SVD().apply(state, SVDConfig(rank=4, residual=True), stats)
    assert float((state.original - state.effective_weight()).pow(2).sum()) < prune_err


def test_invalid_combinations_raise() -> None:
    state, stats = _layer()
    RTN().apply(state, RTNConfig(bits=4, group_size=8), stats)
    with pytest.raises(ValueError, match="first and only"):
        SVD().apply(state, SVDConfig(rank=4), stats)

    state, stats = _layer()
    Magnitude().apply(state, MagnitudeConfig(sparsity=0.5), stats)
    with pytest.raises(ValueError, match="first and only"):
        SVD().apply(state, SVDConfig(rank=4), stats)

    state, stats = _layer()
    with pytest.raises(ValueError, match="earlier quantize or prune"):
        SVD().apply(state, SVDConfig(rank=4, residual=True), stats)

    state, stats = _layer()
    SVD().apply(state, SVDConfig(rank=4), stats)
    for cfg in (SVDConfig(rank=4), SVDConfig(rank=4, residual=True)):
        with pytest.raises(ValueError, match="low-rank"):
            SVD().apply(state, cfg, stats)
    with pytest.raises(ValueError, match="low-rank"):
        RTN().apply(state, RTNConfig(bits=4, group_size=8), stats)

    state, stats = _layer()
    RTN().apply(state, RTNConfig(bits=4, group_size=8), stats)
    SVD().apply(state, SVDConfig(rank=4, residual=True), stats)
    with pytest.raises(ValueError, match="low-rank"):
        SVD().apply(state, SVDConfig(rank=4, residual=True), stats)
